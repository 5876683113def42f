//! The measurement settings every benchmark in this directory shares.

use std::time::Duration;

use criterion::Criterion;

/// Short runs, so that `cargo bench` takes a few minutes on a 2-core machine: one second of warm-up
/// and two of measurement per benchmark. The benchmarks here take micro- or nanoseconds, so two
/// seconds still gives thousands of iterations per sample.
pub(crate) fn short_runs() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}
