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
use axum::http::Method;
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
{
    type Response = Response;
    type Error = S::Error;
    type Future = Timed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        Timed {
            started: Instant::now(),
            method: req.method().clone(),
            route: req.extensions().get::<MatchedPath>().cloned(),
            series: self.series.clone(),
            fut: self.inner.call(req),
        }
    }
}

pin_project_lite::pin_project! {
    /// The route's future, observed when it yields the response head (no box: this runs on
    /// every request).
    pub struct Timed<F> {
        #[pin]
        fut: F,
        started: Instant,
        method: Method,
        route: Option<MatchedPath>,
        series: RouteSeries,
    }
}

impl<F, E> Future for Timed<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.fut.poll(cx));
        if let Ok(resp) = &out {
            let route = this.route.as_ref().map(MatchedPath::as_str);
            this.series
                .observe(this.method, route, resp.status(), this.started.elapsed());
        }
        Poll::Ready(out)
    }
}
