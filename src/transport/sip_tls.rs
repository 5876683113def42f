//! SIP over TLS toward PBX trunks (RFC 3261 §26.3.1, `SIP/2.0/TLS`): client connections only.
//!
//! Connections are opened on demand, reused for every message to the same address (responses and the PBX's
//! in-dialog requests come back on them), and framed like TCP. The PBX's certificate is verified against
//! the system roots plus an optional CA file (`sip.tls_ca_file`), which also covers a self-signed PBX: the
//! file is then the PBX's own certificate. The name checked (and sent as SNI) is the trunk's host as
//! configured; an IP address is checked against the certificate's IP addresses. A failed connect, handshake
//! or verification is a transport error, which fails the transaction over to the next trunk.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsConnector;

use super::sip_net::{CONNECT_TIMEOUT, SipNetEvent, StreamConnections, StreamTransport, connect};

/// Why the TLS client cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsClientError {
    /// The CA file cannot be read or holds no PEM certificate.
    #[error("{path}: {reason}")]
    CaFile {
        /// The configured file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Neither the system nor the CA file gave a single usable root certificate.
    #[error("no trusted root certificate: the system store is empty and sip.tls_ca_file is not set")]
    NoRoots,
}

/// TLS connections toward trunks.
#[derive(Clone)]
pub struct SipTls {
    streams: Arc<StreamConnections>,
    connector: TlsConnector,
    /// The name each trunk address is verified against; written when trunks are (re)loaded, read on connect,
    /// never held across an await.
    server_names: Arc<Mutex<HashMap<SocketAddr, ServerName<'static>>>>,
}

impl SipTls {
    /// A client configuration trusting the system roots and, when given, every certificate in `ca_file`.
    pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, TlsClientError> {
        let mut roots = rustls::RootCertStore::empty();
        let system = rustls_native_certs::load_native_certs();
        for error in &system.errors {
            tracing::debug!(%error, "system root certificate not loaded");
        }
        let (added, ignored) = roots.add_parsable_certificates(system.certs);
        tracing::debug!(added, ignored, "system root certificates for sip tls");
        if let Some(path) = ca_file {
            let ca_error = |reason: String| TlsClientError::CaFile {
                path: path.to_owned(),
                reason,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|error| ca_error(error.to_string()))?;
            if certs.is_empty() {
                return Err(ca_error("no PEM certificate in the file".to_owned()));
            }
            for cert in certs {
                roots.add(cert).map_err(|error| ca_error(error.to_string()))?;
            }
        }
        if roots.is_empty() {
            return Err(TlsClientError::NoRoots);
        }
        Ok(rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth())
    }

    /// A TLS transport with `config`; framed messages and errors go to `events` until `shutdown`.
    pub fn new(
        config: rustls::ClientConfig,
        events: mpsc::Sender<SipNetEvent>,
        max_message_bytes: usize,
        shutdown: watch::Receiver<bool>,
    ) -> SipTls {
        SipTls {
            streams: StreamConnections::new(StreamTransport::Tls, events, max_message_bytes, shutdown),
            connector: TlsConnector::from(Arc::new(config)),
            server_names: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Remembers that the trunk at `peer` is called `host`: its certificate must name `host`, which is also
    /// sent as SNI. Without a name the certificate must hold `peer`'s IP address.
    pub fn set_server_name(&self, peer: SocketAddr, host: &str) {
        match ServerName::try_from(host.to_owned()) {
            Ok(name) => {
                self.lock_names().insert(peer, name);
            }
            Err(error) => tracing::warn!(%peer, host, %error, "trunk host is not a TLS server name"),
        }
    }

    /// Sends one message to `peer`, connecting and verifying the certificate first when no connection to it
    /// is open. Failures come back as [`SipNetEvent::TransportError`].
    pub fn send(&self, peer: SocketAddr, bytes: Bytes) {
        let Some(registered) = self.streams.send_or_register(peer, bytes) else {
            return;
        };
        let name = self
            .lock_names()
            .get(&peer)
            .cloned()
            .unwrap_or_else(|| ServerName::IpAddress(peer.ip().into()));
        let streams = self.streams.clone();
        let connector = self.connector.clone();
        tokio::spawn(async move {
            let handshake = async {
                let tcp = connect(peer).await?;
                connector
                    .connect(name, tcp)
                    .await
                    .map_err(|error| format!("tls handshake failed: {error}"))
            };
            match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
                Ok(Ok(stream)) => streams.run(stream, registered),
                Ok(Err(reason)) => {
                    tracing::warn!(%peer, %reason, "sip tls connection refused");
                    streams.abandon(registered, reason);
                }
                Err(_) => streams.abandon(registered, "tls connect timed out".to_owned()),
            }
        });
    }

    fn lock_names(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, ServerName<'static>>> {
        // A poisoned map only means a task panicked mid-insert; the map itself is still usable.
        self.server_names
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_refused() {
        let missing = SipTls::client_config(Some(Path::new("/nonexistent/pbx.pem")));
        assert!(matches!(missing, Err(TlsClientError::CaFile { .. })));
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let error = SipTls::client_config(Some(&empty)).unwrap_err();
        assert!(
            error.to_string().ends_with("no PEM certificate in the file"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_server_that_is_not_tls_is_a_transport_error() {
        let (_stop_tx, stop) = watch::channel(false);
        let (events, mut rx) = mpsc::channel(8);
        let roots = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let tls = SipTls::new(roots, events, 65_536, stop);
        // A plain TCP listener that answers the ClientHello with SIP text.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let (mut stream, _) = listener.accept().await.unwrap();
            let _ = stream.write_all(b"SIP/2.0 400 Bad Request\r\n\r\n").await;
        });
        tls.set_server_name(peer, "localhost");
        tls.send(peer, Bytes::from_static(b"OPTIONS sip:pbx SIP/2.0\r\n\r\n"));
        match rx.recv().await {
            Some(SipNetEvent::TransportError {
                transport, reason, ..
            }) => {
                assert_eq!(transport, StreamTransport::Tls);
                assert!(reason.starts_with("tls handshake failed"), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
