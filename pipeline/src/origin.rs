//! Where credentials may go. A token or API key is sent only to the origin (scheme, host,
//! port) of the endpoint it was configured for; a redirect never takes a request from
//! https down to http; URLs are printed and recorded without their userinfo and query
//! (signed CDN URLs and `user:pass@` carry credentials there).

use reqwest::Url;

/// Whether `url` has the same scheme, host and port as `endpoint` (so that the endpoint's
/// credentials may be sent with it). Unparsable URLs share no origin.
pub fn same_origin(url: &str, endpoint: &str) -> bool {
    match (Url::parse(url), Url::parse(endpoint)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

/// `url` without userinfo and with its query replaced by `?…`: safe for logs, errors and
/// journals.
pub fn printable(url: &str) -> String {
    let Ok(mut parsed) = Url::parse(url) else {
        // Not a URL we can parse: keep the part before any query, unless it may hold a user.
        let head = url.split(['?', '#']).next().unwrap_or_default();
        return if head.contains('@') { "(a URL that cannot be parsed)".to_string() } else { head.to_string() };
    };
    let had_query = parsed.query().is_some();
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    parsed.set_query(None);
    parsed.set_fragment(None);
    let mut out = String::from(parsed);
    if had_query {
        out.push_str("?…");
    }
    out
}

/// The redirect policy of every client: at most 10 hops, never from https to http (a
/// credential or a body must not travel in the clear because a server said so). The
/// client itself drops `Authorization` when a redirect leaves the host.
pub fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt.previous().last().is_some_and(|from| from.scheme() == "https") && attempt.url().scheme() == "http";
        if downgrade {
            let to = printable(attempt.url().as_str());
            attempt.error(format!("refused a redirect from https to {to}: it would send the request in the clear"))
        } else if attempt.previous().len() > 10 {
            attempt.error("more than 10 redirects")
        } else {
            attempt.follow()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_scheme_host_and_port() {
        assert!(same_origin("https://hub.example/api/x?cursor=2", "https://hub.example"));
        assert!(same_origin("https://hub.example:443/a", "https://hub.example"));
        assert!(!same_origin("http://hub.example/a", "https://hub.example"), "a downgrade is another origin");
        assert!(!same_origin("https://hub.example.evil/a", "https://hub.example"));
        assert!(!same_origin("https://hub.example:8443/a", "https://hub.example"));
        assert!(!same_origin("not a url", "https://hub.example"));
    }

    #[test]
    fn printable_urls_hold_no_credentials() {
        assert_eq!(printable("http://user:pass@127.0.0.1:8000/v1"), "http://127.0.0.1:8000/v1");
        assert_eq!(printable("https://cdn/x?X-Amz-Signature=s"), "https://cdn/x?…");
        assert_eq!(printable("https://hub.example"), "https://hub.example/");
        assert_eq!(printable("weird://a:b@host?q"), "weird://host?…");
        assert_eq!(printable("no scheme user:pw@host?q=1"), "(a URL that cannot be parsed)");
        assert_eq!(printable("relative/path?q=1"), "relative/path");
    }
}
