//! Times every matched route for `stacyvm_http_request_duration_seconds` (docs/metrics.md). A
//! `route_layer`, so the route's template (`MatchedPath`) is known; each route gets its own
//! layer instance and with it its own [`RouteSeries`] cache. Requests no route matched (404
//! from the fallback) are not measured. The time is until the response head is ready; a
//! streamed body (exec output, file downloads) flows after it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::response::Response;

use crate::metrics::{RequestMetrics, RouteSeries};

#[derive(Clone)]
pub struct RequestMetricsLayer {
    metrics: RequestMetrics,
}

impl RequestMetricsLayer {
    pub fn new(metrics: RequestMetrics) -> Self {
        RequestMetricsLayer { metrics }
    }
}

impl<S> tower::Layer<S> for RequestMetricsLayer {
    type Service = TimedRoute<S>;

    fn layer(&self, inner: S) -> TimedRoute<S> {
        TimedRoute {
            inner,
            series: self.metrics.route_series(),
        }
    }
}

#[derive(Clone)]
pub struct TimedRoute<S> {
    inner: S,
    series: RouteSeries,
}

impl<S> tower::Service<Request> for TimedRoute<S>
where
    S: tower::Service<Request, Response = Response>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let started = Instant::now();
        let method = req.method().clone();
        let route = req.extensions().get::<MatchedPath>().cloned();
        let series = self.series.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            let route = route.as_ref().map(MatchedPath::as_str);
            series.observe(&method, route, resp.status(), started.elapsed());
            Ok(resp)
        })
    }
}
