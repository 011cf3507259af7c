//! Request latency by route template, method and status class. The HTTP layer
//! (`http/request_metrics.rs`) times each matched route and records here; each route holds a
//! [`RouteSeries`], a cache of its series, so after a route's first request per (method, status
//! class) recording is atomics only. The label set stays bounded: routes are templates
//! (`MatchedPath`), methods and classes are fixed tables.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;

use super::histogram::LatencyHistogram;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    method: &'static str,
    route: String,
    status_class: &'static str,
}

pub type HttpFamily = Family<HttpLabels, LatencyHistogram>;

const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER",
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn method_index(m: &Method) -> usize {
    METHODS
        .iter()
        .position(|s| *s == m.as_str())
        .unwrap_or(METHODS.len() - 1)
}

fn class_index(s: StatusCode) -> usize {
    usize::from(s.as_u16() / 100).clamp(1, CLASSES.len()) - 1
}

/// The service's request-latency family; hands out one [`RouteSeries`] per route.
#[derive(Clone, Default)]
pub struct RequestMetrics {
    family: HttpFamily,
}

impl RequestMetrics {
    pub(super) fn family(&self) -> &HttpFamily {
        &self.family
    }

    /// A new, empty cache for one route.
    pub fn route_series(&self) -> RouteSeries {
        RouteSeries(Arc::new(SeriesCache {
            family: self.family.clone(),
            slots: std::array::from_fn(|_| OnceLock::new()),
        }))
    }
}

/// One route's series, by `METHODS` × `CLASSES`, filled on first use; clones share the cache
/// (one `Arc`: a clone is taken on every request).
#[derive(Clone)]
pub struct RouteSeries(Arc<SeriesCache>);

struct SeriesCache {
    family: HttpFamily,
    slots: [OnceLock<LatencyHistogram>; METHODS.len() * CLASSES.len()],
}

impl RouteSeries {
    /// Records one request; `route` is the matched template (`None`: "unmatched").
    pub fn observe(
        &self,
        method: &Method,
        route: Option<&str>,
        status: StatusCode,
        elapsed: Duration,
    ) {
        let (m, c) = (method_index(method), class_index(status));
        if let Some(slot) = self.0.slots.get(m * CLASSES.len() + c) {
            slot.get_or_init(|| {
                self.0.family.get_or_create_owned(&HttpLabels {
                    method: METHODS[m],
                    route: route.unwrap_or("unmatched").to_string(),
                    status_class: CLASSES[c],
                })
            })
            .observe(elapsed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_classes_map_into_their_tables() {
        assert_eq!(METHODS[method_index(&Method::GET)], "GET");
        assert_eq!(METHODS[method_index(&Method::DELETE)], "DELETE");
        assert_eq!(METHODS[method_index(&Method::CONNECT)], "OTHER");
        for (code, class) in [
            (101, "1xx"),
            (201, "2xx"),
            (304, "3xx"),
            (404, "4xx"),
            (503, "5xx"),
        ] {
            let s = StatusCode::from_u16(code).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(CLASSES[class_index(s)], class);
        }
        // Statuses past 599 are valid in `http`; they count as 5xx rather than panic.
        let odd = StatusCode::from_u16(999).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(CLASSES[class_index(odd)], "5xx");
    }

    #[test]
    fn a_route_caches_its_series_per_method_and_class() {
        let m = RequestMetrics::default();
        let r = m.route_series();
        let ms = Duration::from_millis(1);
        r.observe(&Method::GET, Some("/x/{id}"), StatusCode::OK, ms);
        r.clone()
            .observe(&Method::GET, Some("/x/{id}"), StatusCode::CREATED, ms);
        r.observe(&Method::POST, Some("/x/{id}"), StatusCode::NOT_FOUND, ms);
        let count = |method, class| {
            m.family()
                .get_or_create(&HttpLabels {
                    method,
                    route: "/x/{id}".into(),
                    status_class: class,
                })
                .count()
        };
        assert_eq!(count("GET", "2xx"), 2);
        assert_eq!(count("POST", "4xx"), 1);
    }
}
