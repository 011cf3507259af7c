//! Token bucket per caller: the authenticated credential, or the client's address when there
//! is none (auth off, `key_by: ip`), and a second bucket per address for failed
//! authentication. The client chooses nothing that picks its bucket: `X-User-ID` is ignored
//! and forwarding headers count only from `server.trusted_proxies` (docs/configuration.md).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use ipnet::IpNet;
use serde_json::{json, Value};

use crate::service::Caller;
use crate::settings::{RateKeyBy, RateLimitSettings};

/// Most buckets kept: past it, idle buckets (older than `bucket_ttl`) go first, then the
/// longest unused quarter. Keys are short (a credential name or an address), so the map stays
/// well under a few MB whatever callers send.
const MAX_BUCKETS: usize = 10_000;

struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct RateLimiter {
    cfg: RateLimitSettings,
    trusted: Vec<IpNet>,
    buckets: Mutex<HashMap<String, Bucket>>,
    allowed: AtomicU64,
    limited: AtomicU64,
    evicted: AtomicU64,
}

/// The client's address: the peer's, unless the peer is a trusted proxy, in which case the
/// nearest address in `X-Forwarded-For` that is not itself a trusted proxy (read from the
/// right, as each proxy appends), else `X-Real-IP`, else the peer's.
pub fn client_ip(peer: Option<IpAddr>, h: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer.map(|p| p.to_canonical())?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let parse = |s: &str| s.trim().parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    let entries: Vec<&str> = h
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    if !entries.is_empty() {
        // The nearest hop seen so far; a garbled entry ends the walk there.
        let mut client = peer;
        for entry in entries.iter().rev() {
            let Some(ip) = parse(entry) else { break };
            client = ip;
            if !is_trusted(&ip) {
                break;
            }
        }
        return Some(client);
    }
    h.get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(parse)
        .or(Some(peer))
}

impl RateLimiter {
    pub fn new(cfg: RateLimitSettings, trusted: Vec<IpNet>) -> Self {
        RateLimiter {
            cfg,
            trusted,
            buckets: Mutex::new(HashMap::new()),
            allowed: AtomicU64::new(0),
            limited: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.cfg.enabled && self.cfg.requests_per_minute > 0
    }

    fn capacity(&self) -> f64 {
        if self.cfg.burst <= 0 {
            self.cfg.requests_per_minute as f64
        } else {
            self.cfg.burst as f64
        }
    }

    pub fn client_ip(&self, peer: Option<IpAddr>, h: &HeaderMap) -> Option<IpAddr> {
        client_ip(peer, h, &self.trusted)
    }

    /// The bucket of an authenticated request. `owner` and `api_key` both mean the credential
    /// (which key, whichever header carried it): an owner is whatever `X-User-ID` says, so
    /// keying on it let every request pick a fresh bucket.
    pub fn key_for(&self, caller: &Caller, client: Option<IpAddr>) -> String {
        match (self.cfg.key_by, caller.role) {
            (RateKeyBy::Owner | RateKeyBy::ApiKey, Some(role)) => format!("key:{}", role.as_str()),
            _ => ip_key("ip", client),
        }
    }

    /// Counts one failed authentication from `client`: `Err(retry_after_secs)` once that
    /// address has failed more than the configured rate allows.
    pub fn check_failed_auth(&self, client: Option<IpAddr>) -> Result<(), u64> {
        if !self.enabled() {
            return Ok(());
        }
        // A refused guess counts as limited; one let through to its 401 is not "allowed".
        self.take(&ip_key("authfail", client))
            .map(|_| ())
            .inspect_err(|_| {
                self.limited.fetch_add(1, Ordering::Relaxed);
            })
    }

    /// `Ok((limit, remaining))` or `Err(retry_after_secs)`.
    pub fn check(&self, key: &str) -> Result<(u64, u64), u64> {
        let r = self.take(key);
        let counter = if r.is_ok() {
            &self.allowed
        } else {
            &self.limited
        };
        counter.fetch_add(1, Ordering::Relaxed);
        r
    }

    /// One token from `key`'s bucket, counting nothing.
    fn take(&self, key: &str) -> Result<(u64, u64), u64> {
        let cap = self.capacity();
        let rate = self.cfg.requests_per_minute as f64 / 60.0;
        let now = Instant::now();
        let Ok(mut map) = self.buckets.lock() else {
            return Ok((cap as u64, 0));
        };
        if map.len() >= MAX_BUCKETS && !map.contains_key(key) {
            self.evict(&mut map, now);
        }
        let b = map.entry(key.to_string()).or_insert(Bucket {
            tokens: cap,
            last: now,
        });
        let elapsed = now.duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(cap);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok((cap as u64, b.tokens.floor() as u64))
        } else {
            let wait = ((1.0 - b.tokens) / rate).ceil().max(1.0);
            Err(wait as u64)
        }
    }

    /// Makes room for one more bucket: drops the idle ones, and if that is not enough the
    /// longest unused quarter (a dropped bucket starts full again, which only a caller with
    /// thousands of credentials or addresses can exploit).
    fn evict(&self, map: &mut HashMap<String, Bucket>, now: Instant) {
        let before = map.len();
        let ttl = self.cfg.bucket_ttl.max(Duration::from_secs(60));
        map.retain(|_, b| now.duration_since(b.last) < ttl);
        if map.len() >= MAX_BUCKETS {
            let mut lasts: Vec<Instant> = map.values().map(|b| b.last).collect();
            let cut = MAX_BUCKETS / 4;
            let (_, nth, _) = lasts.select_nth_unstable(cut);
            let nth = *nth;
            map.retain(|_, b| b.last > nth);
        }
        self.evicted
            .fetch_add((before - map.len()) as u64, Ordering::Relaxed);
    }

    pub fn to_json(&self) -> Value {
        let active = self.buckets.lock().map(|m| m.len()).unwrap_or(0);
        let key_by = match self.cfg.key_by {
            RateKeyBy::Owner => "owner",
            RateKeyBy::ApiKey => "api_key",
            RateKeyBy::Ip => "ip",
        };
        json!({
            "enabled": self.enabled(),
            "requests_per_minute": self.cfg.requests_per_minute,
            "burst": self.cfg.burst,
            "key_by": key_by,
            "active_buckets": active,
            "allowed_total": self.allowed.load(Ordering::Relaxed),
            "limited_total": self.limited.load(Ordering::Relaxed),
            "evicted_total": self.evicted.load(Ordering::Relaxed),
            "bucket_ttl": stacyvm_types::GoDuration::from_std(self.cfg.bucket_ttl).to_string(),
            "cleanup_interval": "1m0s",
        })
    }
}

fn ip_key(kind: &str, ip: Option<IpAddr>) -> String {
    match ip {
        Some(ip) => format!("{kind}:{ip}"),
        None => format!("{kind}:unknown"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::service::CallerRole;

    fn limiter(key_by: RateKeyBy, trusted: &[&str]) -> RateLimiter {
        RateLimiter::new(
            RateLimitSettings {
                enabled: true,
                requests_per_minute: 60,
                burst: 2,
                key_by,
                bucket_ttl: Duration::from_secs(900),
            },
            trusted.iter().map(|t| t.parse().unwrap()).collect(),
        )
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn bucket_denies_after_burst() {
        let rl = limiter(RateKeyBy::Ip, &[]);
        assert!(rl.check("a").is_ok());
        assert!(rl.check("a").is_ok());
        assert_eq!(rl.check("a"), Err(1));
        assert!(rl.check("b").is_ok(), "buckets are per key");
    }

    #[test]
    fn the_credential_picks_the_bucket_not_the_user_id() {
        let rl = limiter(RateKeyBy::Owner, &[]);
        let caller = |user: &str, role| Caller {
            user_id: Some(user.into()),
            role,
            key_header: "X-API-Key",
        };
        let c = ip("10.0.0.1");
        assert_eq!(
            rl.key_for(&caller("alice", Some(CallerRole::Api)), c),
            rl.key_for(&caller("bob", Some(CallerRole::Api)), c)
        );
        assert_ne!(
            rl.key_for(&caller("alice", Some(CallerRole::Api)), c),
            rl.key_for(&caller("alice", Some(CallerRole::Admin)), c)
        );
        // No credential (auth off): the address.
        assert_eq!(rl.key_for(&caller("alice", None), c), "ip:10.0.0.1");
        let rl = limiter(RateKeyBy::Ip, &[]);
        assert_eq!(
            rl.key_for(&caller("alice", Some(CallerRole::Api)), c),
            "ip:10.0.0.1"
        );
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1, 10.0.0.7"),
            ("x-real-ip", "2.2.2.2"),
        ]);
        assert_eq!(client_ip(ip("9.9.9.9"), &h, &[]), ip("9.9.9.9"));
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(client_ip(ip("9.9.9.9"), &h, &trusted), ip("9.9.9.9"));
        // From a proxy: the nearest untrusted hop (a client cannot prepend its way out).
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("1.1.1.1"));
        let spoofed = headers(&[("x-forwarded-for", "6.6.6.6, 1.1.1.1")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &spoofed, &trusted), ip("1.1.1.1"));
        let real = headers(&[("x-real-ip", "2.2.2.2")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &real, &trusted), ip("2.2.2.2"));
        let garbled = headers(&[("x-forwarded-for", "1.1.1.1, junk, 10.0.0.9")]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &garbled, &trusted),
            ip("10.0.0.9")
        );
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), &h, &trusted),
            ip("1.1.1.1"),
            "an IPv4-mapped peer is its IPv4 address"
        );
        assert_eq!(client_ip(None, &h, &trusted), None);
    }

    #[test]
    fn the_bucket_map_is_bounded() {
        let rl = limiter(RateKeyBy::Ip, &[]);
        for i in 0..12_000 {
            let _ = rl.check(&format!("ip:{i}"));
        }
        let len = rl.buckets.lock().unwrap().len();
        assert!(len <= MAX_BUCKETS, "{len} buckets");
        assert!(rl.evicted.load(Ordering::Relaxed) >= 2_000);
        // A bucket in use survives an eviction pass.
        let _ = rl.check("ip:11999");
        assert!(rl.buckets.lock().unwrap().contains_key("ip:11999"));
    }

    #[test]
    fn failed_authentication_is_throttled_per_address() {
        let rl = limiter(RateKeyBy::Owner, &[]);
        let a = ip("10.0.0.1");
        assert!(rl.check_failed_auth(a).is_ok());
        assert!(rl.check_failed_auth(a).is_ok());
        assert_eq!(rl.check_failed_auth(a), Err(1));
        assert!(rl.check_failed_auth(ip("10.0.0.2")).is_ok());
    }
}
