//! The measurement settings every benchmark in this directory shares.
//!
//! Time is the benchmark thread's CPU time, not wall time: on a shared machine (this one has 2 cores
//! and other jobs), wall time counts the moments another process held the core, CPU time only this
//! thread's own work. What a call costs a core is CPU time, too. Other load still shows a little
//! (cold caches after a context switch, a busy SMT sibling), so numbers from a quiet machine are lower.

use std::time::Duration;

use criterion::Criterion;
use criterion::measurement::{Measurement, ValueFormatter, WallTime};

/// Criterion measuring the benchmark thread's CPU time.
pub(crate) type CpuCriterion = Criterion<ThreadCpuTime>;

/// Short runs, so that `cargo bench` takes a few minutes on a 2-core machine: one second of warm-up
/// and two of measurement per benchmark. The benchmarks here take micro- or nanoseconds, so two
/// seconds still gives thousands of iterations per sample.
pub(crate) fn short_runs() -> CpuCriterion {
    Criterion::default()
        .with_measurement(ThreadCpuTime { wall: WallTime })
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`), in nanoseconds. Criterion reads it once
/// per sample (or per batch), and the measured work always runs on the thread that reads it.
pub(crate) struct ThreadCpuTime {
    /// Only for its formatter: values are nanoseconds either way.
    wall: WallTime,
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_nanos()
    }

    fn end(&self, start: u64) -> u64 {
        thread_cpu_nanos().saturating_sub(start)
    }

    fn add(&self, v1: &u64, v2: &u64) -> u64 {
        v1 + v2
    }

    fn zero(&self) -> u64 {
        0
    }

    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        self.wall.formatter()
    }
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
pub(crate) fn thread_cpu_nanos() -> u64 {
    /// `struct timespec` on 64-bit Linux.
    #[repr(C)]
    struct Timespec {
        seconds: i64,
        nanoseconds: i64,
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    unsafe extern "C" {
        fn clock_gettime(clock: i32, time: *mut Timespec) -> i32;
    }
    let mut time = Timespec {
        seconds: 0,
        nanoseconds: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer; this clock always exists on
    // Linux, so it cannot fail and the zero fallback below is never used.
    let status = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut time) };
    if status != 0 {
        return 0;
    }
    time.seconds as u64 * 1_000_000_000 + time.nanoseconds as u64
}

/// Elsewhere, wall time since the first call: correct on an idle machine.
#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
pub(crate) fn thread_cpu_nanos() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
}
