//! SIPp as the PBX: one `sipp` process running a uas scenario from `tests/sipp/` on 127.0.0.1, on free
//! ports, with its message and error traces in a temporary directory that is printed when a test fails.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// SIPp's transport toward the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SippTransport {
    /// One UDP socket (`-t u1`).
    Udp,
    /// One TCP connection (`-t t1`).
    Tcp,
}

/// How to run a scenario.
#[derive(Debug, Clone)]
pub(crate) struct SippOptions {
    /// Calls to handle before exiting (`-m`).
    pub(crate) calls: u32,
    /// Echo the RTP that arrives at the media port (`-rtp_echo`).
    pub(crate) rtp_echo: bool,
    /// What `<pause/>` waits (`-d`): how long a call lasts before the PBX acts.
    pub(crate) pause: Duration,
    /// UDP or TCP.
    pub(crate) transport: SippTransport,
    /// `-key NAME VALUE` pairs, e.g. `rtp_port` for record_dtmf.xml.
    pub(crate) keys: Vec<(String, String)>,
    /// How long a scenario step may wait for a message before the call fails (`-recv_timeout`).
    pub(crate) recv_timeout: Duration,
}

impl Default for SippOptions {
    fn default() -> Self {
        SippOptions {
            calls: 1,
            rtp_echo: false,
            pause: Duration::from_millis(500),
            transport: SippTransport::Udp,
            keys: Vec::new(),
            recv_timeout: Duration::from_secs(20),
        }
    }
}

/// A running `sipp`; killed when dropped, its traces printed if the test is failing.
pub(crate) struct Sipp {
    child: Option<Child>,
    address: SocketAddr,
    media_port: u16,
    scenario: String,
    directory: tempfile::TempDir,
    status: Option<ExitStatus>,
}

impl Sipp {
    /// Starts `tests/sipp/<scenario>.xml` as a uas and waits until its SIP socket is bound.
    pub(crate) fn uas(scenario: &str, options: SippOptions) -> Sipp {
        let path = scenario_path(scenario);
        assert!(path.exists(), "no SIPp scenario {}", path.display());
        let directory = tempfile::tempdir().expect("test setup: a directory for SIPp's traces");
        let port = free_port(options.transport);
        let media_port = free_media_port();
        let mut command = Command::new("sipp");
        command
            .current_dir(directory.path())
            .arg("-sf")
            .arg(&path)
            .args(["-i", "127.0.0.1", "-mi", "127.0.0.1"])
            .args(["-p", &port.to_string(), "-mp", &media_port.to_string()])
            .args([
                "-t",
                if options.transport == SippTransport::Tcp {
                    "t1"
                } else {
                    "u1"
                },
            ])
            .args(["-m", &options.calls.to_string()])
            .args(["-d", &options.pause.as_millis().to_string()])
            .args(["-recv_timeout", &options.recv_timeout.as_millis().to_string()])
            .args(["-trace_msg", "-trace_err", "-nostdin"]);
        if options.rtp_echo {
            command.arg("-rtp_echo");
        }
        for (name, value) in &options.keys {
            command.args(["-key", name, value]);
        }
        let screen = std::fs::File::create(directory.path().join("screen.txt"))
            .expect("test setup: SIPp's screen file");
        let child = command
            .stdin(Stdio::null())
            .stdout(screen)
            .stderr(Stdio::piped())
            .spawn()
            .expect("test setup: run sipp (install sip-tester)");
        let mut sipp = Sipp {
            child: Some(child),
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            media_port,
            scenario: scenario.to_owned(),
            directory,
            status: None,
        };
        sipp.wait_bound(options.transport);
        sipp
    }

    /// SIPp's SIP address, where a trunk points.
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// Its RTP port (`-mp`): what `[media_port]` in the scenario's SDP says, and where `-rtp_echo` listens.
    pub(crate) fn media_port(&self) -> u16 {
        self.media_port
    }

    /// Waits for SIPp to exit and asserts that every call of the scenario succeeded (exit status 0).
    pub(crate) fn expect_success(&mut self, limit: Duration) {
        let status = self.wait(limit);
        if status.code() != Some(0) {
            // Drop prints the traces while the test unwinds.
            panic!("sipp {} exited with {status}", self.scenario);
        }
    }

    /// Waits for SIPp to exit (killing it after `limit`) and returns its status: 0 when every call
    /// succeeded, 1 when one failed.
    pub(crate) fn wait(&mut self, limit: Duration) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let Some(child) = &mut self.child else {
            panic!("sipp {} has no process", self.scenario)
        };
        let deadline = Instant::now() + limit;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.status = Some(status);
                    return status;
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = child.kill();
                    panic!("sipp {} did not finish within {limit:?}", self.scenario);
                }
            }
        }
    }

    /// How many `method` requests SIPp received so far (retransmissions included), read from its
    /// message trace.
    pub(crate) fn received_requests(&self, method: &str) -> usize {
        let prefix = format!("{method} ");
        let Ok(entries) = std::fs::read_dir(self.directory.path()) else {
            return 0;
        };
        let mut count = 0;
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with("_messages.log") {
                continue;
            }
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let mut lines = text.lines();
            while let Some(line) = lines.next() {
                if line.contains("message received") {
                    let start = lines.by_ref().find(|l| !l.trim().is_empty()).unwrap_or_default();
                    count += usize::from(start.starts_with(&prefix));
                }
            }
        }
        count
    }

    /// Stops the process (SIGSTOP): the PBX stops answering, as if it went down.
    pub(crate) fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen process go on (SIGCONT).
    pub(crate) fn thaw(&self) {
        self.signal("-CONT");
    }

    /// Everything SIPp wrote: its error and message traces, and stderr once it exited. Printed by `Drop`
    /// when the test is failing.
    pub(crate) fn traces(&mut self) -> String {
        let mut text = format!(
            "--- sipp {} traces in {} ---\n",
            self.scenario,
            self.directory.path().display()
        );
        if let Some(child) = &mut self.child
            && let Ok(Some(_)) = child.try_wait()
            && let Some(stderr) = &mut child.stderr
        {
            let mut buffer = String::new();
            let _ = std::io::Read::read_to_string(stderr, &mut buffer);
            text.push_str(&format!("[stderr]\n{buffer}\n"));
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.directory.path())
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "log")) {
            let content = std::fs::read_to_string(file).unwrap_or_default();
            text.push_str(&format!("[{}]\n{content}\n", file.display()));
        }
        text
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .expect("test setup: run kill");
            assert!(status.success(), "kill {signal} sipp failed");
        }
    }

    /// Polls until SIPp holds its port (binding it ourselves fails), or fails the test after 10 s.
    fn wait_bound(&mut self, transport: SippTransport) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let taken = match transport {
                SippTransport::Udp => UdpSocket::bind(self.address).is_err(),
                SippTransport::Tcp => TcpListener::bind(self.address).is_err(),
            };
            if taken {
                return;
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("sipp {} exited at start with {status}", self.scenario);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("sipp {} never bound {}", self.scenario, self.address);
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.traces());
        }
    }
}

/// tests/sipp/<name>.xml.
pub(crate) fn scenario_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(format!("{name}.xml"))
}

/// A port the OS just handed out for `transport` (bound, then released).
pub(crate) fn free_port(transport: SippTransport) -> u16 {
    let port = match transport {
        SippTransport::Udp => UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()),
        SippTransport::Tcp => TcpListener::bind("127.0.0.1:0").and_then(|s| s.local_addr()),
    };
    port.expect("test setup: a free port").port()
}

/// A free even UDP port whose neighbours +1 to +3 are free too: `-rtp_echo` also echoes on port + 2.
fn free_media_port() -> u16 {
    for _ in 0..100 {
        let base = free_port(SippTransport::Udp) & !1;
        if !(1024..=u16::MAX - 4).contains(&base) {
            continue;
        }
        let all_free = (base..base + 4).all(|port| UdpSocket::bind(("127.0.0.1", port)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("test setup: no four free UDP ports in a row");
}
