//! The one way this crate builds HTTP clients: rustls with the ring provider (reqwest is
//! built without a default provider, see docs/DECISIONS.md) and our user agent.

/// A client builder with the TLS provider installed.
pub fn builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().user_agent(concat!("habits-pipeline/", env!("CARGO_PKG_VERSION")))
}
