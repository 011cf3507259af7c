//! Forwarding one preview request to the server listening on a port inside a sandbox
//! (docs/preview.md). The control plane uses it for its own sandboxes and the worker for its
//! sandboxes, so both proxy alike: HTTP/1.1 on a fresh connection, bodies streamed both ways
//! (nothing is buffered), `Upgrade` exchanges (WebSocket) spliced after the server's `101`,
//! hop-by-hop headers dropped.
//!
//! The edge that faces the client (the control plane) also runs [`forward_headers`]: our API
//! keys are dropped, `Via` and `X-Forwarded-*` are added, and a request that already carries
//! our `Via` is a loop ([`looped`]).

pub mod conn;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, Uri, Version};
use axum::response::Response;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Added to every forwarded request, so one that comes back (a sandbox server proxying to a
/// preview URL of the same control plane) is refused instead of looping.
pub const VIA: &str = "1.1 stacyvm-preview";
const VIA_MARK: &str = "stacyvm-preview";

/// Our API keys never reach code inside a sandbox.
const NEVER_FORWARDED: [&str; 2] = ["x-api-key", "x-admin-api-key"];

/// A task the proxy leaves running after it answered: the upstream connection (it carries the
/// response body) and a spliced upgrade. The owner runs it until the process stops.
pub type Detached = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Who owns the proxy's [`Detached`] tasks (the control plane's service, the worker's state).
pub trait Spawn: Send + Sync {
    fn spawn_detached(&self, task: Detached);
}

/// Why a request did not reach the sandbox's server or got no answer from it. Callers answer
/// 502 and log the source.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("handshake with the sandbox's server failed")]
    Handshake(#[source] hyper::Error),
    #[error("the sandbox's server broke the exchange")]
    Exchange(#[source] hyper::Error),
}

/// Whether the request already went through a preview proxy of ours.
pub fn looped(h: &HeaderMap) -> bool {
    h.get_all(header::VIA)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains(VIA_MARK)))
}

/// Whether the request asks to switch protocols (`Connection: upgrade` and `Upgrade`).
pub fn wants_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// Headers for the sandbox's server, at the edge that faces the client: hop-by-hop ones and our
/// API keys go, the original `Host` stays, `Via` and `X-Forwarded-*` are added.
pub fn forward_headers(h: &mut HeaderMap, upgrade: bool, host: &str, client_ip: Option<IpAddr>) {
    strip_hop_by_hop(h, upgrade);
    for name in NEVER_FORWARDED {
        h.remove(name);
    }
    h.append(header::VIA, HeaderValue::from_static(VIA));
    if let Ok(v) = HeaderValue::from_str(host) {
        h.insert(HeaderName::from_static("x-forwarded-host"), v);
    }
    h.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    if let Some(ip) = client_ip {
        let xff = HeaderName::from_static("x-forwarded-for");
        let value = match h.get(&xff).and_then(|v| v.to_str().ok()) {
            Some(prev) => format!("{prev}, {ip}"),
            None => ip.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(xff, v);
        }
    }
}

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1) and those `Connection` names; an upgrade
/// keeps `Connection` and `Upgrade`.
pub fn strip_hop_by_hop(h: &mut HeaderMap, upgrade: bool) {
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !upgrade || (n != header::UPGRADE && n != header::CONNECTION))
        .collect();
    for name in listed {
        h.remove(name);
    }
    for name in [
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
    ] {
        h.remove(name);
    }
    if !upgrade {
        h.remove(header::CONNECTION);
        h.remove(header::UPGRADE);
    }
}

/// The request's path and query (`/` when it has none), for the request line upstream.
pub fn origin_form(uri: &Uri) -> Uri {
    let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
    Uri::try_from(pq).unwrap_or_else(|_| Uri::from_static("/"))
}

/// Sends `req` (headers already prepared) over `io`, a fresh connection to the sandbox's port,
/// and returns the server's response with its body streaming. The request line is origin-form
/// HTTP/1.1 with the path and query untouched. When the server switches protocols, both sides
/// are spliced by a task of `tasks` until either closes.
pub async fn send<I>(io: I, mut req: Request, tasks: &dyn Spawn) -> Result<Response, ForwardError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(ForwardError::Handshake)?;
    // The connection is driven for as long as the exchange lasts (the body streams after this
    // function returned).
    tasks.spawn_detached(Box::pin(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "preview upstream connection ended");
        }
    }));
    let client_upgrade = wants_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    parts.uri = origin_form(&parts.uri);
    parts.version = Version::HTTP_11;
    parts.extensions = Default::default();
    let mut resp = sender
        .send_request(Request::from_parts(parts, body))
        .await
        .map_err(ForwardError::Exchange)?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream = hyper::upgrade::on(&mut resp);
            splice(
                client_upgrade,
                async move { upstream.await.map(TokioIo::new) },
                tasks,
            );
        }
        return Ok(resp.map(|_| Body::empty()));
    }
    strip_hop_by_hop(resp.headers_mut(), false);
    Ok(resp.map(Body::new))
}

/// Copies bytes both ways between the client's upgraded connection and `upstream` (once both
/// are ready) until either side closes or the owner of `tasks` stops.
pub fn splice<U, E, F>(client: OnUpgrade, upstream: F, tasks: &dyn Spawn)
where
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    E: Send + 'static,
    F: Future<Output = Result<U, E>> + Send + 'static,
{
    tasks.spawn_detached(Box::pin(async move {
        let (Ok(client), Ok(mut upstream)) = tokio::join!(client, upstream) else {
            return;
        };
        let mut client = TokioIo::new(client);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_keys_are_not_forwarded() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("x-api-key", "k"),
            ("x-admin-api-key", "a"),
            ("authorization", "Basic eA=="),
            ("cookie", "c=1"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        forward_headers(&mut h, false, "3000-sb-1.localhost", None);
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "authorization",
                "cookie",
                "via",
                "x-forwarded-host",
                "x-forwarded-proto"
            ]
        );
        assert!(looped(&h));
    }

    #[test]
    fn upgrades_keep_connection_and_upgrade() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(wants_upgrade(&h));
        forward_headers(&mut h, true, "h", Some([10, 0, 0, 1].into()));
        assert!(h.contains_key(header::UPGRADE) && h.contains_key(header::CONNECTION));
        assert_eq!(
            h.get("x-forwarded-for").map(|v| v.as_bytes()),
            Some(&b"10.0.0.1"[..])
        );
    }

    #[test]
    fn origin_form_keeps_path_and_query() {
        for (given, want) in [
            ("http://3000-sb-1.localhost/a//b/?x=1&y", "/a//b/?x=1&y"),
            ("/x/", "/x/"),
            ("http://h", "/"),
        ] {
            let uri: Uri = given.parse().unwrap_or_default();
            assert_eq!(origin_form(&uri), want, "{given}");
        }
    }
}
