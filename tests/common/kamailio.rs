//! Kamailio (Debian `kamailio`) as a real SIP proxy between the gateway and the PBX: stateful, record-routing,
//! and challenging every INVITE with 407 (digest against a password in its config), as a carrier's or a
//! company's edge proxy does. It relays to the Request-URI, so the trunk names the PBX and the proxy is the
//! trunk's `--outbound-proxy`. Runs on 127.0.0.1 in the foreground, its log kept for a failing test.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::sipp::{SippTransport, free_port};

/// Where Debian installs Kamailio's modules.
const MODULES: &str = "/usr/lib/x86_64-linux-gnu/kamailio/modules/";

/// A running `kamailio`; killed when dropped.
pub(crate) struct Kamailio {
    child: Option<Child>,
    address: SocketAddr,
    directory: tempfile::TempDir,
}

impl Kamailio {
    /// Starts the proxy, challenging INVITEs for `password` (any user name), and waits until it answers
    /// OPTIONS.
    pub(crate) fn start(password: &str) -> Kamailio {
        let directory = tempfile::tempdir().expect("test setup: a directory for kamailio");
        let address = SocketAddr::from(([127, 0, 0, 1], free_port(SippTransport::Udp)));
        let config = format!(
            r#"#!KAMAILIO
debug=2
log_stderror=yes
fork=yes
children=2
disable_tcp=yes
auto_aliases=no
listen=udp:{address}
mpath="{MODULES}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "pv.so"
loadmodule "auth.so"
loadmodule "siputils.so"
loadmodule "textops.so"
loadmodule "xlog.so"
modparam("rr", "append_fromtag", 1)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{ xlog("L_NOTICE", "in-dialog $rm routed\n"); t_relay(); exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    if (is_method("OPTIONS") && uri == myself) {{ sl_send_reply("200", "OK"); exit; }}
    if (is_method("INVITE")) {{
        if (!pv_proxy_authenticate("$fd", "{password}", "0")) {{
            xlog("L_NOTICE", "challenging INVITE from $fu\n");
            proxy_challenge("$fd", "0");
            exit;
        }}
        xlog("L_NOTICE", "authenticated INVITE from $fu as $au\n");
        consume_credentials();
    }}
    record_route();
    t_relay();
}}
"#
        );
        let config_path = directory.path().join("kamailio.cfg");
        std::fs::write(&config_path, config).expect("test setup: kamailio config");
        let log = std::fs::File::create(directory.path().join("kamailio.log")).expect("test setup: log file");
        let child = Command::new("kamailio")
            .arg("-f")
            .arg(&config_path)
            .args(["-DD", "-E", "-n", "1", "-Y"])
            .arg(directory.path())
            .arg("-P")
            .arg(directory.path().join("kamailio.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("test setup: log file"))
            .stderr(log)
            .spawn()
            .expect("kamailio is installed (tests/run.sh installs it)");
        let kamailio = Kamailio {
            child: Some(child),
            address,
            directory,
        };
        kamailio.wait_ready(Duration::from_secs(10));
        kamailio
    }

    /// Where the proxy takes SIP (UDP).
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// Kamailio's log so far.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(self.directory.path().join("kamailio.log")).unwrap_or_default()
    }

    /// Sends OPTIONS until one is answered 200.
    fn wait_ready(&self, limit: Duration) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("test setup: a UDP socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("a read timeout");
        let local = socket.local_addr().expect("its address");
        let deadline = Instant::now() + limit;
        let mut buffer = [0u8; 2048];
        for attempt in 0u32.. {
            let options = format!(
                "OPTIONS sip:{0} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-ready-{1}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag=ready\r\nTo: <sip:{0}>\r\n\
                 Call-ID: ready-{1}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                self.address, attempt
            );
            let _ = socket.send_to(options.as_bytes(), self.address);
            if let Ok(n) = socket.recv(&mut buffer)
                && buffer[..n].starts_with(b"SIP/2.0 200")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kamailio did not start\n{}",
                self.log_text()
            );
        }
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        super::end_peer(
            self.child.take(),
            "kamailio",
            self.directory.path(),
            &self.log_text(),
        );
    }
}
