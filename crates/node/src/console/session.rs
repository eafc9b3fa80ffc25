//! The console's session cookie and CSRF tokens.
//!
//! The cookie holds the SQL session token the sign-in issued (so a session lasts, and ends, as
//! a SQL session does). A form's CSRF token is a digest of that session token: a page of this
//! origin can embed it, another origin can neither read it nor derive it. A state-changing
//! request must carry it, and a request whose `Origin` header names another origin is refused
//! whatever it carries.

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// The session cookie's name.
pub(super) const COOKIE: &str = "tessera_session";

/// The session token in `headers`' cookies, if any.
pub(super) fn token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|v| !v.is_empty())
}

/// The `Set-Cookie` value that holds `token` (`secure`: only over TLS).
pub(super) fn set_cookie(token: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}")
}

/// The `Set-Cookie` value that removes the cookie.
pub(super) fn clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

/// The CSRF token of the session `token`.
pub(super) fn csrf(token: &str) -> String {
    let digest = Sha256::new().chain_update(b"tessera console csrf\0").chain_update(token.as_bytes()).finalize();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

/// Whether `headers`' `Origin` (when the browser sends one) is this host: a form posted from
/// another origin, or an opaque one, may not act here.
pub(super) fn same_origin(headers: &HeaderMap) -> Result<(), String> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return Ok(()) };
    if origin == "null" {
        return Err("a form from an opaque origin may not act here".into());
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
    if origin_host == host { Ok(()) } else { Err(format!("a form from {origin} may not act here")) }
}

/// Whether a state-changing request may go on: its `Origin` is this host ([`same_origin`])
/// and its form's `csrf` is the session's.
pub(super) fn same_origin_with_csrf(headers: &HeaderMap, token: &str, form_csrf: Option<&str>) -> Result<(), String> {
    same_origin(headers)?;
    match form_csrf {
        Some(given) if given == csrf(token) => Ok(()),
        _ => Err("the form's CSRF token is missing or not this session's: reload the page and try again".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_reads_back_and_a_form_needs_this_sessions_token_and_origin() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "a=1; tessera_session=tok; b=2".parse().unwrap());
        headers.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(token(&headers).as_deref(), Some("tok"));
        assert!(same_origin_with_csrf(&headers, "tok", Some(&csrf("tok"))).is_ok());
        assert!(same_origin_with_csrf(&headers, "tok", Some(&csrf("other"))).is_err());
        assert!(same_origin_with_csrf(&headers, "tok", None).is_err());
        headers.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(same_origin_with_csrf(&headers, "tok", Some(&csrf("tok"))).is_ok());
        headers.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(same_origin_with_csrf(&headers, "tok", Some(&csrf("tok"))).unwrap_err().contains("evil.example"));
        assert!(set_cookie("t", true).ends_with("HttpOnly; SameSite=Strict; Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }
}
