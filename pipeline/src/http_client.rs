//! The one way this crate builds HTTP clients: rustls with the ring provider (reqwest is
//! built without a default provider, see docs/DECISIONS.md), our user agent, and the
//! redirect policy of `origin` (never from https to http).

/// A client builder with the TLS provider installed.
pub fn builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().user_agent(concat!("habits-pipeline/", env!("CARGO_PKG_VERSION"))).redirect(crate::origin::redirect_policy())
}

/// A body read up to a cap: the bytes, and whether the server had more to send.
pub struct CappedBody {
    pub bytes: Vec<u8>,
    pub over_cap: bool,
}

/// Reads at most `cap` bytes of a response body (chunk by chunk, so that a server that
/// sends without end costs `cap` bytes of memory, not its whole answer); the connection
/// is dropped as soon as more arrives.
pub async fn body_up_to(mut resp: reqwest::Response, cap: usize) -> Result<CappedBody, reqwest::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if bytes.len() + chunk.len() > cap {
            bytes.extend_from_slice(&chunk[..cap - bytes.len()]);
            return Ok(CappedBody { bytes, over_cap: true });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(CappedBody { bytes, over_cap: false })
}

/// A transport error with its causes, for messages: its URL shown without userinfo or
/// query (`origin::printable`).
pub fn transport_message(e: reqwest::Error) -> String {
    let url = e.url().map(|u| crate::origin::printable(u.as_str()));
    let e = e.without_url();
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    if let Some(url) = url {
        message.push_str(&format!(" ({url})"));
    }
    message
}
