//! Where a preview request carries the sandbox's preview token (docs/preview.md), and the
//! cookie flow for browsers:
//!
//! - headers `X-Preview-Token` or `e2b-traffic-access-token` (E2B's name), for programs;
//! - `?stacyvm_preview_token=<token>` on a first visit: the answer is a redirect to the same
//!   URL without the parameter that sets the cookie below (so the token leaves the address
//!   bar, history and `Referer`s);
//! - the cookie `stacyvm_preview_token` (`HttpOnly`, `SameSite=Lax`, `Path=/`, no `Domain`:
//!   the browser sends it to that one preview host only).
//!
//! None of them reaches the sandbox's server: [`strip`] removes the headers and the cookie.

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::response::Response;

/// The query parameter and the cookie name.
pub const PARAM: &str = "stacyvm_preview_token";
const COOKIE: &str = PARAM;
const HEADERS: [&str; 2] = ["x-preview-token", "e2b-traffic-access-token"];

/// The tokens a request presents.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Presented {
    /// Candidates in the order they are tried (a browser may send several cookies of one name,
    /// e.g. one a sibling host set for the parent domain: any that matches lets it through).
    pub tokens: Vec<String>,
    /// The token came as the query parameter: answer with the cookie and a redirect.
    pub from_query: bool,
}

impl Presented {
    /// The query parameter wins (its token is the one the cookie will carry), then the
    /// headers, then the cookies. Empty values count as absent.
    pub fn of(req: &Request) -> Self {
        if let Some(t) = query_token(req.uri()) {
            return Presented {
                tokens: vec![t],
                from_query: true,
            };
        }
        let h = req.headers();
        let mut tokens: Vec<String> = HEADERS
            .iter()
            .flat_map(|name| h.get_all(*name))
            .filter_map(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        tokens.extend(cookies(h));
        Presented {
            tokens,
            from_query: false,
        }
    }

    pub fn as_strs(&self) -> Vec<&str> {
        self.tokens.iter().map(String::as_str).collect()
    }
}

/// The value of our query parameter, if present and not empty.
fn query_token(uri: &Uri) -> Option<String> {
    uri.query()?
        .split('&')
        .filter_map(|pair| pair.strip_prefix(PARAM)?.strip_prefix('='))
        .map(str::trim)
        .find(|v| !v.is_empty())
        .map(str::to_string)
}

/// Our cookie's values among the request's `Cookie` headers.
fn cookies(h: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            (name.trim() == COOKIE).then(|| value.trim().trim_matches('"').to_string())
        })
        .filter(|v| !v.is_empty())
}

/// Removes the token headers and our cookie (keeping the request's other cookies).
pub fn strip(h: &mut HeaderMap) {
    for name in HEADERS {
        h.remove(name);
    }
    let kept: Vec<String> = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| {
            !pair.is_empty() && pair.split_once('=').is_none_or(|(n, _)| n.trim() != COOKIE)
        })
        .map(str::to_string)
        .collect();
    h.remove(header::COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            h.insert(header::COOKIE, v);
        }
    }
}

/// The request's path and query without our parameter, for the redirect's `Location`
/// (relative, so the browser stays on the preview host).
fn without_param(uri: &Uri) -> String {
    let path = uri.path();
    let rest: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some(PARAM))
        .collect();
    if rest.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", rest.join("&"))
    }
}

/// The answer to a first visit with `?stacyvm_preview_token=`: 307 to the same URL without
/// the parameter (method and body kept), setting the cookie when the sandbox's previews need
/// a token.
pub fn redirect(req: &Request, token: &str, set_cookie: bool) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&without_param(req.uri())) {
        h.insert(header::LOCATION, v);
    }
    if set_cookie {
        let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax");
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            h.insert(header::SET_COOKIE, v);
        }
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn req(uri: &str, headers: &[(&str, &str)]) -> Request {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::empty()).unwrap()
    }

    #[test]
    fn tokens_come_from_query_headers_and_cookies() {
        let q = Presented::of(&req(
            "/a?x=1&stacyvm_preview_token=abc&y",
            &[("x-preview-token", "hdr")],
        ));
        assert_eq!(
            q,
            Presented {
                tokens: vec!["abc".into()],
                from_query: true
            }
        );
        let h = Presented::of(&req(
            "/a?stacyvm_preview_token=",
            &[
                ("e2b-traffic-access-token", "e2b"),
                ("x-preview-token", "ours"),
                ("cookie", "a=1; stacyvm_preview_token=c1"),
                ("cookie", "stacyvm_preview_token=\"c2\"; b=2"),
            ],
        ));
        assert_eq!(h.tokens, ["ours", "e2b", "c1", "c2"]);
        assert!(!h.from_query);
        assert_eq!(
            Presented::of(&req("/", &[("x-preview-token", " ")])),
            Presented::default()
        );
        // A parameter whose name only starts with ours is not ours.
        assert!(Presented::of(&req("/?stacyvm_preview_tokenx=1", &[]))
            .tokens
            .is_empty());
    }

    #[test]
    fn strip_keeps_other_cookies() {
        let mut h = HeaderMap::new();
        h.insert("x-preview-token", HeaderValue::from_static("t"));
        h.insert("e2b-traffic-access-token", HeaderValue::from_static("t"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; stacyvm_preview_token=t"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        strip(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h[header::COOKIE], "a=1; b=2");
        let mut only = HeaderMap::new();
        only.insert(
            header::COOKIE,
            HeaderValue::from_static("stacyvm_preview_token=t"),
        );
        strip(&mut only);
        assert!(only.is_empty());
    }

    #[test]
    fn redirect_drops_the_parameter_and_sets_a_host_only_cookie() {
        let r = redirect(
            &req("/app/?a=1&stacyvm_preview_token=tok&b=%20", &[]),
            "tok",
            true,
        );
        assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(r.headers()[header::LOCATION], "/app/?a=1&b=%20");
        let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap();
        assert_eq!(
            cookie,
            "stacyvm_preview_token=tok; Path=/; HttpOnly; SameSite=Lax"
        );
        assert!(!cookie.contains("Domain"));
        let plain = redirect(&req("/?stacyvm_preview_token=tok", &[]), "tok", false);
        assert_eq!(plain.headers()[header::LOCATION], "/");
        assert!(!plain.headers().contains_key(header::SET_COOKIE));
    }
}
