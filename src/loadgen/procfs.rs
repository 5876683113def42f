//! What the load generator reads from `/proc`: a process's CPU time and resident memory, and the
//! machine's busy time, so that cost per call and the load the machine was under can be reported.
//!
//! CPU times in `/proc` are in clock ticks of `USER_HZ`, which Linux fixes at 100 per second for
//! user space on every architecture it ships (`getconf CLK_TCK`), so no libc call is needed.

use std::path::PathBuf;

use thiserror::Error;

/// Clock ticks per second in `/proc/*/stat` and `/proc/stat` (Linux's `USER_HZ`).
pub const TICKS_PER_SECOND: f64 = 100.0;

/// Why a `/proc` file could not be used.
#[derive(Debug, Error)]
pub enum ProcError {
    /// The file could not be read (the process is gone, or this is not Linux).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file's text is not in the expected format.
    #[error("{path}: unexpected format")]
    Format {
        /// The file.
        path: PathBuf,
    },
}

/// Which process to sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// The load generator itself (`/proc/self`).
    Myself,
    /// Another process by id.
    Pid(u32),
}

impl Process {
    fn directory(self) -> PathBuf {
        match self {
            Process::Myself => PathBuf::from("/proc/self"),
            Process::Pid(pid) => PathBuf::from(format!("/proc/{pid}")),
        }
    }
}

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ProcessSample {
    /// User plus system CPU time of all its threads, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size, in KiB.
    pub rss_kb: u64,
}

impl ProcessSample {
    /// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`.
    pub fn read(process: Process) -> Result<Self, ProcError> {
        let directory = process.directory();
        let stat_path = directory.join("stat");
        let status_path = directory.join("status");
        let stat = read(&stat_path)?;
        let status = read(&status_path)?;
        Ok(ProcessSample {
            cpu_seconds: parse_cpu_seconds(&stat).ok_or(ProcError::Format { path: stat_path })?,
            rss_kb: parse_rss_kb(&status).ok_or(ProcError::Format { path: status_path })?,
        })
    }

    /// The sum of several processes' readings.
    pub fn sum(samples: &[ProcessSample]) -> ProcessSample {
        samples
            .iter()
            .fold(ProcessSample::default(), |total, sample| ProcessSample {
                cpu_seconds: total.cpu_seconds + sample.cpu_seconds,
                rss_kb: total.rss_kb + sample.rss_kb,
            })
    }
}

/// One reading of the whole machine's CPU time (`/proc/stat`, first line), in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MachineSample {
    /// Ticks spent doing anything but idling or waiting for I/O, over all cores.
    pub busy_ticks: u64,
    /// All ticks, over all cores.
    pub total_ticks: u64,
}

impl MachineSample {
    /// Reads `/proc/stat`.
    pub fn read() -> Result<Self, ProcError> {
        let path = PathBuf::from("/proc/stat");
        let text = read(&path)?;
        parse_machine(&text).ok_or(ProcError::Format { path })
    }

    /// The busy share of the time between `earlier` and `self`, 0 to 1.
    pub fn busy_since(&self, earlier: &MachineSample) -> f64 {
        let total = self.total_ticks.saturating_sub(earlier.total_ticks);
        if total == 0 {
            return 0.0;
        }
        self.busy_ticks.saturating_sub(earlier.busy_ticks) as f64 / total as f64
    }
}

/// UDP error counters of this network namespace (`/proc/net/snmp`): datagrams dropped because a
/// socket's receive or send buffer was full. On loopback these are the only way a datagram is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct UdpDrops {
    /// `RcvbufErrors`: dropped on arrival, the receiving socket's buffer was full (a reader too slow).
    pub receive_buffer_errors: u64,
    /// `SndbufErrors`: refused on sending, the sending socket's buffer was full.
    pub send_buffer_errors: u64,
}

impl UdpDrops {
    /// Reads `/proc/net/snmp`; zeros when it is unreadable (the figures are a diagnosis, not a result).
    pub fn read() -> Self {
        std::fs::read_to_string("/proc/net/snmp")
            .ok()
            .and_then(|text| parse_udp_drops(&text))
            .unwrap_or_default()
    }

    /// Drops counted since `earlier`.
    pub fn since(&self, earlier: &UdpDrops) -> UdpDrops {
        UdpDrops {
            receive_buffer_errors: self
                .receive_buffer_errors
                .saturating_sub(earlier.receive_buffer_errors),
            send_buffer_errors: self.send_buffer_errors.saturating_sub(earlier.send_buffer_errors),
        }
    }
}

/// The `Udp:` header and value lines of `/proc/net/snmp`, matched by column name.
fn parse_udp_drops(snmp: &str) -> Option<UdpDrops> {
    let mut udp = snmp.lines().filter(|line| line.starts_with("Udp:"));
    let names: Vec<&str> = udp.next()?.split_whitespace().collect();
    let values: Vec<&str> = udp.next()?.split_whitespace().collect();
    let column = |name: &str| -> Option<u64> {
        let index = names.iter().position(|n| *n == name)?;
        values.get(index)?.parse().ok()
    };
    Some(UdpDrops {
        receive_buffer_errors: column("RcvbufErrors")?,
        send_buffer_errors: column("SndbufErrors")?,
    })
}

/// The 1-minute load average, when `/proc/loadavg` is readable.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn read(path: &PathBuf) -> Result<String, ProcError> {
    std::fs::read_to_string(path).map_err(|source| ProcError::Read {
        path: path.clone(),
        source,
    })
}

/// utime + stime (fields 14 and 15 of `/proc/<pid>/stat`) in seconds. The command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / TICKS_PER_SECOND)
}

/// The `VmRSS:` line of `/proc/<pid>/status`, in KiB.
pub fn parse_rss_kb(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The `cpu` line of `/proc/stat`: user nice system idle iowait irq softirq steal (guest time is already
/// counted in user).
fn parse_machine(stat: &str) -> Option<MachineSample> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    if ticks.len() < 5 {
        return None;
    }
    let total: u64 = ticks.iter().sum();
    let idle = ticks[3] + ticks[4];
    Some(MachineSample {
        busy_ticks: total - idle,
        total_ticks: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        let stat = "4242 (tokio (runtime) 1) S 1 2 3 0 -1 4194560 10 0 0 0 250 75 0 0 20 0 9 0 1 2 3";
        assert_eq!(parse_cpu_seconds(stat), Some(3.25));
        assert_eq!(parse_cpu_seconds("4242 (short) S 1 2"), None);
        assert_eq!(parse_cpu_seconds("no parentheses"), None);
    }

    #[test]
    fn rss_line() {
        let status = "Name:\tcallgate\nVmPeak:\t  900 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_rss_kb(status), Some(12345));
        assert_eq!(parse_rss_kb("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn machine_busy_share() {
        let earlier = parse_machine("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        let later = parse_machine("cpu  400 0 100 1000 100 0 0 0 0 0\n").unwrap();
        assert_eq!(earlier.total_ticks, 1000);
        assert_eq!(earlier.busy_ticks, 200);
        assert!((later.busy_since(&earlier) - 0.5).abs() < 1e-9);
        assert_eq!(earlier.busy_since(&earlier), 0.0);
        assert_eq!(parse_machine("intr 1 2 3\n"), None);
    }

    #[test]
    fn udp_drops_by_column_name() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
            Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors\n\
            Udp: 376313 747 4967 383291 4960 7 0\n\
            UdpLite: InDatagrams NoPorts\nUdpLite: 0 0\n";
        let drops = parse_udp_drops(snmp).unwrap();
        assert_eq!(
            drops,
            UdpDrops {
                receive_buffer_errors: 4960,
                send_buffer_errors: 7
            }
        );
        assert_eq!(drops.since(&drops), UdpDrops::default());
        assert_eq!(parse_udp_drops("Ip: Forwarding\nIp: 1\n"), None);
    }

    #[test]
    fn reads_this_process() {
        let first = ProcessSample::read(Process::Myself).unwrap();
        assert!(first.rss_kb > 0);
        // Burn some CPU so that the clock ticks move.
        let mut x = 0_u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(60) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let second = ProcessSample::read(Process::Pid(std::process::id())).unwrap();
        assert!(second.cpu_seconds > first.cpu_seconds, "{first:?} {second:?}");
        assert!(matches!(
            ProcessSample::read(Process::Pid(u32::MAX)),
            Err(ProcError::Read { .. })
        ));
        assert!(MachineSample::read().unwrap().total_ticks > 0);
    }
}
