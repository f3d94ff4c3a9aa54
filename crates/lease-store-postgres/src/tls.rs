//! TLS for connections whose `sslmode` is not `disable`: rustls with the ring provider and the
//! Mozilla root certificates (`webpki-roots`).

use std::sync::Arc;

use tokio_postgres_rustls::MakeRustlsConnect;

/// A connector that verifies the server's certificate against the Mozilla roots.
pub(crate) fn connector() -> MakeRustlsConnect {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    match config {
        Ok(config) => MakeRustlsConnect::new(config),
        // The ring provider supports the default versions; this branch cannot be taken, but a
        // connector without roots fails every handshake rather than panicking.
        Err(_) => MakeRustlsConnect::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        ),
    }
}
