//! str0m's crypto with one change: the DTLS configuration is built once per process, not once per call.
//!
//! str0m's aws-lc-rs provider builds a fresh `dimpl::Config` for every `Rtc`, and `dimpl`'s
//! `ConfigBuilder::build` self-tests the crypto provider every time (ECDH in every key-exchange group,
//! ECDSA verifications): measured with `perf`, 63 % of `MediaSession::prepare`, about half a millisecond of
//! a media worker per call before the INVITE can leave for the PBX. The configuration is immutable and
//! shared by `Arc` between DTLS instances by design, so it is built (and the provider self-tested) once per
//! MTU and reused; everything else — SRTP, hashes, certificate generation, the DTLS state machine — is
//! str0m's own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use str0m::crypto::dtls::ProtocolVersion;
use str0m::crypto::dtls::{DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion};
use str0m::crypto::{CryptoError, CryptoProvider};

/// str0m's default provider with [`SharedConfigDtls`] for DTLS; what every WebRTC leg uses.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    static DTLS: OnceLock<SharedConfigDtls> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let defaults = str0m::crypto::from_feature_flags();
            let dtls: &'static SharedConfigDtls = DTLS.get_or_init(|| SharedConfigDtls {
                defaults: defaults.dtls_provider,
                configs: Mutex::new(HashMap::new()),
            });
            Arc::new(CryptoProvider {
                dtls_provider: dtls,
                ..defaults
            })
        })
        .clone()
}

/// A DTLS provider that builds each MTU's `dimpl` configuration once.
#[derive(Debug)]
pub struct SharedConfigDtls {
    /// str0m's own provider, for certificates.
    defaults: &'static dyn DtlsProvider,
    /// The configuration per MTU (str0m passes `None` for its default).
    configs: Mutex<HashMap<Option<usize>, Arc<dimpl::Config>>>,
}

impl SharedConfigDtls {
    /// The configuration str0m's provider would build for `mtu`, from the cache.
    fn config(&self, mtu: Option<usize>) -> Result<Arc<dimpl::Config>, CryptoError> {
        // A poisoned lock only means another thread panicked while inserting: the map is still usable.
        let mut configs = self
            .configs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(config) = configs.get(&mtu) {
            return Ok(config.clone());
        }
        // The same settings as str0m-aws-lc-rs: ICE already proves return routability, so DTLS cookies
        // would only add a round trip.
        let mut builder = dimpl::Config::builder().use_server_cookie(false);
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        let config = Arc::new(
            builder
                .build()
                .map_err(|error| CryptoError::Other(format!("dimpl config creation failed: {error}")))?,
        );
        configs.insert(mtu, config.clone());
        Ok(config)
    }
}

impl DtlsProvider for SharedConfigDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        self.defaults.generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let config = self.config(mtu)?;
        let cert = cert.clone();
        let dtls = match dtls_version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert, now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert, now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert, now),
            other => return Err(CryptoError::Other(format!("unsupported DTLS version: {other}"))),
        };
        Ok(Box::new(SharedConfigInstance { dtls }))
    }
}

/// One DTLS association: `dimpl`'s, behind str0m's trait.
struct SharedConfigInstance {
    dtls: dimpl::Dtls,
}

impl std::fmt::Debug for SharedConfigInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedConfigInstance").finish_non_exhaustive()
    }
}

impl DtlsInstance for SharedConfigInstance {
    fn set_active(&mut self, active: bool) {
        self.dtls.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.dtls.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        self.dtls.poll_output(buf)
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.dtls.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.dtls.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.dtls.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.dtls.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.dtls.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.dtls.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.dtls.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_is_built_once_per_mtu() {
        let provider = crypto_provider();
        assert!(Arc::ptr_eq(&provider, &crypto_provider()));
        let dtls = SharedConfigDtls {
            defaults: provider.dtls_provider,
            configs: Mutex::new(HashMap::new()),
        };
        let first = dtls.config(None).unwrap();
        assert!(Arc::ptr_eq(&first, &dtls.config(None).unwrap()));
        let small = dtls.config(Some(1150)).unwrap();
        assert!(!Arc::ptr_eq(&first, &small));
        assert!(
            dtls.config(Some(10)).is_err(),
            "an MTU below dimpl's minimum is refused as before"
        );
        let cert = provider.dtls_provider.generate_certificate().unwrap();
        let instance = dtls
            .new_dtls(&cert, Instant::now(), DtlsVersion::Auto, None)
            .unwrap();
        assert!(!instance.is_closed());
    }
}
