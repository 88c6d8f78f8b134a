//! Outbound HTTP (processors, webhook subscribers): reqwest on rustls with the `ring` provider
//! (aws-lc-rs would need cmake and nasm to build), certificates checked against the system's
//! roots. Every client is built here, so the provider is installed before the first one.

use std::sync::Once;

/// A reqwest client builder whose TLS runs on rustls / ring.
pub fn client_builder() -> reqwest::ClientBuilder {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Err only if another provider was installed first, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
}

/// A client with reqwest's defaults (no timeout: set one per request).
pub fn client() -> reqwest::Client {
    client_builder()
        .build()
        .expect("a reqwest client with default settings builds")
}
