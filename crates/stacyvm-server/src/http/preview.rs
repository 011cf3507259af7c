//! The built-in preview proxy: a request whose `Host` is `{port}-{id}.{preview_domain}` goes to
//! the server listening on that port of the sandbox (HTTP/1.1, bodies streamed both ways,
//! WebSocket and other upgrades passed through). It runs before API routing and before API-key
//! auth: browsers open preview URLs and cannot send `X-API-Key`, so the sandbox id is the
//! capability (docs/preview.md, docs/threat-model.md).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::error::ApiError;
use super::AppState;
use crate::service::{PreviewHost, Service};

/// How long connecting to the sandbox's server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Marks requests the proxy sent, so one that comes back (a sandbox server proxying to a
/// preview URL of this control plane) is refused instead of looping.
const VIA: &str = "1.1 stacyvm-preview";

/// Our API keys never reach code inside a sandbox.
const NEVER_FORWARDED: [&str; 2] = ["x-api-key", "x-admin-api-key"];

/// Middleware in front of the whole router: preview hosts are proxied, anything else goes on.
/// A request to a preview host (`{port}-{id}.{preview_domain}`) proxied to the sandbox, or
/// the request back when it is not one (the API serves it).
pub async fn intercept(st: &AppState, req: Request) -> Result<Response, Request> {
    let Some(host) = request_host(&req) else {
        return Err(req);
    };
    let Some(preview) = PreviewHost::parse(&host) else {
        return Err(req);
    };
    let target = match st.svc.preview_target(&preview).await {
        Ok(None) => return Err(req),
        Ok(Some(addr)) => addr,
        Err(e) => {
            tracing::debug!(sandbox_id = preview.sandbox_id, port = preview.port, error = %e, "preview refused");
            return Ok(ApiError::from(e).into_response());
        }
    };
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let started = Instant::now();
    let resp = proxy(&st.svc, req, target, &host, preview.port).await;
    tracing::info!(sandbox_id = preview.sandbox_id, port = preview.port, %method, %path,
        status = resp.status().as_u16(), duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        "preview");
    Ok(resp)
}

/// The request's host in lower case without `:port`: the URI's authority (absolute form), else
/// the `Host` header. IPv6 literals are never preview hosts.
fn request_host(req: &Request) -> Option<String> {
    let raw = match req.uri().host() {
        Some(h) => h,
        None => req.headers().get(header::HOST)?.to_str().ok()?,
    };
    if raw.starts_with('[') {
        return None;
    }
    let host = raw.rsplit_once(':').map_or(raw, |(h, _)| h);
    Some(host.trim().to_ascii_lowercase())
}

/// Forwards `req` to `target` on a fresh HTTP/1.1 connection and returns its response.
async fn proxy(
    svc: &Service,
    mut req: Request,
    target: SocketAddr,
    host: &str,
    port: u16,
) -> Response {
    let looped = req
        .headers()
        .get_all(header::VIA)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains("stacyvm-preview")));
    if looped {
        return ApiError::preview_loop().into_response();
    }
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%target, error = %e, "preview upstream refused");
            return ApiError::preview_upstream(port).into_response();
        }
        Err(_) => {
            tracing::debug!(%target, "preview upstream connect timed out");
            return ApiError::preview_upstream(port).into_response();
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(x) => x,
        Err(e) => {
            tracing::debug!(%target, error = %e, "preview upstream handshake failed");
            return ApiError::preview_upstream(port).into_response();
        }
    };
    // The connection is driven for as long as the exchange lasts, and ends with the service.
    svc.spawn_until_shutdown(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "preview upstream connection ended");
        }
    });

    let upgrade = wants_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let client_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ci| ci.0.ip());
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    parts.uri = Uri::try_from(path).unwrap_or_else(|_| Uri::from_static("/"));
    parts.version = Version::HTTP_11;
    parts.extensions = Default::default();
    forward_headers(&mut parts.headers, upgrade, host, client_ip);
    let upstream_req = Request::from_parts(parts, body);

    let mut resp = match sender.send_request(upstream_req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%target, error = %e, "preview upstream failed");
            return ApiError::preview_upstream(port).into_response();
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            svc.spawn_until_shutdown(async move {
                let (Ok(client), Ok(upstream)) = tokio::join!(client_upgrade, upstream_upgrade)
                else {
                    return;
                };
                let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
        return resp.map(|_| Body::empty());
    }
    strip_hop_by_hop(resp.headers_mut(), false);
    resp.map(Body::new)
}

fn wants_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// Headers for the sandbox's server: hop-by-hop ones and our API keys go, the original `Host`
/// stays, `Via` and `X-Forwarded-*` are added.
fn forward_headers(
    h: &mut HeaderMap,
    upgrade: bool,
    host: &str,
    client_ip: Option<std::net::IpAddr>,
) {
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
fn strip_hop_by_hop(h: &mut HeaderMap, upgrade: bool) {
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
}
