//! https for the exporters (the `tls` feature): rustls with the ring provider and the webpki
//! roots, built without rustls's `logging` feature so that nothing of it reaches the host's
//! `log` logger from the uploader thread.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::conn::{Conn, Sock};

/// The client configuration every https upload of an exporter uses.
#[derive(Clone, Debug)]
pub(crate) struct Tls {
    config: Arc<ClientConfig>,
}

impl Tls {
    /// Fails only if the crypto provider cannot do the default protocol versions.
    pub fn new() -> Result<Tls, String> {
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls {
            config: Arc::new(config),
        })
    }

    /// TLS to `host` over `sock`; the handshake happens with the first write.
    pub fn wrap(&self, host: &str, sock: Sock) -> std::io::Result<Conn> {
        let name = ServerName::try_from(host.to_string()).map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host}: {e}"))
        })?;
        let conn = ClientConnection::new(self.config.clone(), name)
            .map_err(|e| std::io::Error::other(format!("TLS: {e}")))?;
        Ok(Conn::Tls(Box::new(StreamOwned::new(conn, sock))))
    }
}
