//! A TLS PBX for the trunk tests. Debian's SIPp is built without OpenSSL (`-t l1` refuses to start), so
//! SIPp runs over TCP behind [`TlsFront`]: a rustls server that terminates TLS with a certificate made by
//! `openssl` at test time and relays each connection's bytes to SIPp unchanged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};

/// A self-signed server certificate (not a CA: webpki refuses a CA certificate as a server's) for
/// 127.0.0.1 and localhost, with its key, in a temporary directory.
pub(crate) struct PbxCertificate {
    directory: tempfile::TempDir,
}

impl PbxCertificate {
    /// Runs `openssl req -x509` for a new P-256 key; `common_name` tells certificates apart in logs.
    pub(crate) fn generate(common_name: &str) -> PbxCertificate {
        let directory = tempfile::tempdir().expect("test setup: a directory for the certificate");
        let output = Command::new("openssl")
            .current_dir(directory.path())
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "2", "-subj", &format!("/CN={common_name}")])
            .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-keyout", "key.pem", "-out", "cert.pem"])
            .output()
            .expect("test setup: run openssl (install openssl)");
        assert!(
            output.status.success(),
            "openssl req failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        PbxCertificate { directory }
    }

    /// The PEM certificate: what `sip.tls_ca_file` points at to trust this PBX.
    pub(crate) fn cert_path(&self) -> PathBuf {
        self.directory.path().join("cert.pem")
    }

    fn key_path(&self) -> PathBuf {
        self.directory.path().join("key.pem")
    }
}

/// A TLS listener on 127.0.0.1 relaying every connection to a TCP address; stops when dropped.
pub(crate) struct TlsFront {
    certificate: PbxCertificate,
    address: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    server_names: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    /// Listens on a free port with `certificate`, relaying to `backend` (SIPp's TCP address).
    pub(crate) async fn start(certificate: PbxCertificate, backend: SocketAddr) -> TlsFront {
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs(&certificate.cert_path()), key(&certificate.key_path()))
            .expect("test setup: a rustls server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("test setup: bind the TLS front");
        let address = listener.local_addr().expect("a bound listener has an address");
        let handshakes = Arc::new(AtomicUsize::new(0));
        let server_names = Arc::new(Mutex::new(Vec::new()));
        let (counted, named) = (handshakes.clone(), server_names.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let (counted, named) = (counted.clone(), named.clone());
                tokio::spawn(async move {
                    // A refused handshake (the gateway did not trust us) just ends this connection.
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        return;
                    };
                    counted.fetch_add(1, Ordering::Relaxed);
                    if let Some(name) = tls.get_ref().1.server_name() {
                        named.lock().expect("no holder panics").push(name.to_owned());
                    }
                    let Ok(mut pbx) = TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut pbx).await;
                });
            }
        });
        TlsFront {
            certificate,
            address,
            handshakes,
            server_names,
            task,
        }
    }

    /// The certificate it presents.
    pub(crate) fn certificate(&self) -> &PbxCertificate {
        &self.certificate
    }

    /// Where the TLS trunk points.
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// Completed TLS handshakes so far.
    pub(crate) fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::Relaxed)
    }
}

impl TlsFront {
    /// The SNI names clients sent, one per handshake that carried one.
    pub(crate) fn server_names(&self) -> Vec<String> {
        self.server_names.lock().expect("no holder panics").clone()
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .expect("test setup: read the certificate")
}

fn key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).expect("test setup: read the key")
}
