//! baresip (Debian `baresip-core`) as the PBX: a real, independent SIP/RTP stack that auto-answers calls to 100 (the test widgets' destination), plays
//! a sine from its `ausine` source, records what it decodes with `sndfile`, and takes commands (hang up)
//! over its `ctrl_tcp` socket. It runs on 127.0.0.1 only, from a temporary config directory that is
//! printed with its log when a test fails.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::sipp::{SippTransport, free_port};

/// The frequency baresip plays toward the gateway (the browser plays 440 Hz).
pub(crate) const BARESIP_TONE_HZ: u32 = 1000;

/// A running `baresip`; killed when dropped.
pub(crate) struct Baresip {
    child: Option<Child>,
    sip: SocketAddr,
    control: SocketAddr,
    directory: tempfile::TempDir,
}

impl Baresip {
    /// Starts baresip answering every call with `codec` (`PCMU` or `PCMA`) and waits until its SIP and
    /// control sockets are up.
    pub(crate) fn start(codec: &str) -> Baresip {
        let directory = tempfile::tempdir().expect("test setup: a directory for baresip");
        let sip = SocketAddr::from(([127, 0, 0, 1], free_port(SippTransport::Udp)));
        let control = SocketAddr::from(([127, 0, 0, 1], free_port(SippTransport::Tcp)));
        let config = format!(
            "poll_method epoll\n\
             sip_listen {sip}\n\
             net_interface 127.0.0.1\n\
             module_path /usr/lib/baresip/modules\n\
             module g711.so\n\
             module ausine.so\n\
             module alsa.so\n\
             module sndfile.so\n\
             module_app account.so\n\
             module_app menu.so\n\
             module_app ctrl_tcp.so\n\
             ctrl_tcp_listen {control}\n\
             audio_source ausine,{BARESIP_TONE_HZ}\n\
             ausrc_srate 48000\n\
             ausrc_channels 2\n\
             audio_player alsa,null\n\
             audio_alert alsa,null\n\
             snd_path {}\n",
            directory.path().display()
        );
        std::fs::write(directory.path().join("config"), config).expect("test setup: baresip config");
        std::fs::write(
            directory.path().join("accounts"),
            format!("<sip:100@{sip}>;regint=0;answermode=auto;audio_codecs={codec}\n"),
        )
        .expect("test setup: baresip accounts");
        let log = std::fs::File::create(directory.path().join("baresip.log")).expect("test setup: log file");
        let child = Command::new("baresip")
            .arg("-f")
            .arg(directory.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("test setup: log file"))
            .stderr(log)
            .spawn()
            .expect("baresip is installed (tests/run.sh installs baresip-core)");
        let baresip = Baresip {
            child: Some(child),
            sip,
            control,
            directory,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(control).is_err() {
            assert!(
                Instant::now() < deadline,
                "baresip did not start\n{}",
                baresip.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        baresip.wait_for_log("baresip is ready", Duration::from_secs(10));
        baresip
    }

    /// Where baresip takes SIP (UDP).
    pub(crate) fn address(&self) -> SocketAddr {
        self.sip
    }

    /// baresip's console output so far.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(self.directory.path().join("baresip.log")).unwrap_or_default()
    }

    /// Waits until the log holds `needle`, failing the test with the log after `limit`.
    pub(crate) fn wait_for_log(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.log_text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "baresip never logged {needle:?}\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a `ctrl_tcp` command (a netstring-framed JSON object) and returns baresip's reply.
    pub(crate) fn command(&self, command: &str) -> String {
        let mut stream = TcpStream::connect(self.control).expect("baresip's control socket");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("a read timeout");
        let body = format!(r#"{{"command":"{command}","params":"","token":"t1"}}"#);
        stream
            .write_all(format!("{}:{body},", body.len()).as_bytes())
            .expect("write to baresip's control socket");
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    reply.extend_from_slice(&chunk[..n]);
                    if String::from_utf8_lossy(&reply).contains(r#""response":true"#) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        String::from_utf8_lossy(&reply).into_owned()
    }

    /// The samples of the audio baresip decoded from the gateway (its `sndfile` dump, 16-bit mono),
    /// as f64.
    pub(crate) fn decoded_audio(&self) -> Vec<f64> {
        let dump = std::fs::read_dir(self.directory.path())
            .expect("baresip's directory")
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|path| path.to_string_lossy().ends_with("-dec.wav"))
            .unwrap_or_else(|| panic!("no decoded-audio dump from baresip\n{}", self.log_text()));
        wav_samples(&dump)
    }

    /// The directory with the config, log and audio dumps.
    pub(crate) fn directory(&self) -> PathBuf {
        self.directory.path().to_owned()
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        super::end_peer(
            self.child.take(),
            "baresip",
            self.directory.path(),
            &self.log_text(),
        );
    }
}

/// The 16-bit PCM samples of a WAV file's `data` chunk.
fn wav_samples(path: &Path) -> Vec<f64> {
    let bytes = std::fs::read(path).expect("read the WAV dump");
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]) as usize;
        let body = at + 8;
        if id == b"data" {
            let end = (body + size).min(bytes.len());
            return bytes[body..end]
                .chunks_exact(2)
                .map(|pair| f64::from(i16::from_le_bytes([pair[0], pair[1]])))
                .collect();
        }
        at = body + size + (size & 1);
    }
    panic!("{} has no data chunk", path.display());
}
