//! Token bucket per caller key (owner, API key or IP).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use serde_json::{json, Value};

use crate::settings::{RateKeyBy, RateLimitSettings};

struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct RateLimiter {
    cfg: RateLimitSettings,
    buckets: Mutex<HashMap<String, Bucket>>,
    allowed: AtomicU64,
    limited: AtomicU64,
    evicted: AtomicU64,
}

impl RateLimiter {
    pub fn new(cfg: RateLimitSettings) -> Self {
        RateLimiter {
            cfg,
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

    pub fn key_for(&self, h: &HeaderMap, remote_ip: &str) -> String {
        let get = |n: &str| {
            h.get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let ip = || {
            get("x-forwarded-for")
                .and_then(|v| v.split(',').next().map(|s| s.trim().to_string()))
                .or_else(|| get("x-real-ip"))
                .unwrap_or_else(|| remote_ip.to_string())
        };
        match self.cfg.key_by {
            RateKeyBy::Owner => get("x-user-id")
                .map(|u| format!("owner:{u}"))
                .or_else(|| get("x-api-key").map(|k| format!("key:{k}")))
                .unwrap_or_else(|| format!("ip:{}", ip())),
            RateKeyBy::ApiKey => get("x-api-key")
                .map(|k| format!("key:{k}"))
                .unwrap_or_else(|| format!("ip:{}", ip())),
            RateKeyBy::Ip => format!("ip:{}", ip()),
        }
    }

    /// `Ok((limit, remaining))` or `Err(retry_after_secs)`.
    pub fn check(&self, key: &str) -> Result<(u64, u64), u64> {
        let cap = self.capacity();
        let rate = self.cfg.requests_per_minute as f64 / 60.0;
        let now = Instant::now();
        let Ok(mut map) = self.buckets.lock() else {
            return Ok((cap as u64, 0));
        };
        if map.len() > 10_000 {
            let ttl = self.cfg.bucket_ttl.max(Duration::from_secs(60));
            let before = map.len();
            map.retain(|_, b| now.duration_since(b.last) < ttl);
            self.evicted
                .fetch_add((before - map.len()) as u64, Ordering::Relaxed);
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
            self.allowed.fetch_add(1, Ordering::Relaxed);
            Ok((cap as u64, b.tokens.floor() as u64))
        } else {
            self.limited.fetch_add(1, Ordering::Relaxed);
            let wait = ((1.0 - b.tokens) / rate).ceil().max(1.0);
            Err(wait as u64)
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_denies_after_burst() {
        let rl = RateLimiter::new(RateLimitSettings {
            enabled: true,
            requests_per_minute: 60,
            burst: 2,
            key_by: RateKeyBy::Ip,
            bucket_ttl: Duration::from_secs(900),
        });
        assert!(rl.check("a").is_ok());
        assert!(rl.check("a").is_ok());
        assert_eq!(rl.check("a"), Err(1));
        assert!(rl.check("b").is_ok(), "buckets are per key");
    }
}
