//! The admin API: stats, Prometheus metrics, invalidation, health.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::http::{CacheHandle, LayerStats};

/// The admin API's state; cheap to clone.
#[derive(Clone)]
pub(crate) struct Admin(Arc<Inner>);

struct Inner {
    cache: CacheHandle,
    token: Option<String>,
    recorder: PrometheusRecorder,
    exposition: PrometheusHandle,
}

impl Admin {
    pub(crate) fn new(cache: CacheHandle, token: Option<String>) -> Self {
        // A recorder of our own, not the process-wide one: several proxies (in tests, say)
        // each export their own numbers.
        let recorder = PrometheusBuilder::new().build_recorder();
        let exposition = recorder.handle();
        Self(Arc::new(Inner {
            cache,
            token,
            recorder,
            exposition,
        }))
    }

    fn route(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        let method = request.method();
        match (method, path) {
            (&Method::GET, "/healthz") => text(StatusCode::OK, "text/plain", "ok\n".into()),
            (&Method::GET, "/stats") => json(StatusCode::OK, &stats_json(&self.0.cache.stats())),
            (&Method::GET, "/metrics") => text(StatusCode::OK, "text/plain; version=0.0.4", self.metrics()),
            (&Method::POST, "/clear") => self.authorized(request).unwrap_or_else(|| {
                self.0.cache.clear();
                json(StatusCode::OK, &serde_json::json!({ "cleared": true }))
            }),
            (&Method::POST, _) if path.starts_with("/invalidate/") => self.authorized(request).unwrap_or_else(|| {
                let raw = &path["/invalidate/".len()..];
                match percent_encoding::percent_decode_str(raw).decode_utf8() {
                    Ok(user) if !user.is_empty() => {
                        let invalidated = self.0.cache.invalidate(&user);
                        json(StatusCode::OK, &serde_json::json!({ "user": user, "invalidated": invalidated }))
                    }
                    _ => error(StatusCode::BAD_REQUEST, "BAD_USER", "name a user: POST /invalidate/{user}"),
                }
            }),
            (_, "/healthz" | "/stats" | "/metrics" | "/clear") => {
                error(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", "see the admin API in the README")
            }
            (_, _) if path.starts_with("/invalidate/") => {
                error(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", "use POST /invalidate/{user}")
            }
            _ => error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "admin endpoints: GET /stats, GET /metrics, GET /healthz, POST /invalidate/{user}, POST /clear",
            ),
        }
    }

    /// `None` if the request may proceed, else the refusal.
    fn authorized(&self, request: &Request<Incoming>) -> Option<Response<Full<Bytes>>> {
        let expected = self.0.token.as_deref()?;
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            return None;
        }
        Some(error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "send the admin token as `Authorization: Bearer <token>`",
        ))
    }

    fn metrics(&self) -> String {
        let stats = self.0.cache.stats();
        metrics::with_local_recorder(&self.0.recorder, || {
            let counters = [
                (
                    "integration_cache_hits_total",
                    "Responses served from the cache.",
                    stats.hits,
                ),
                (
                    "integration_cache_misses_total",
                    "Cacheable requests sent upstream.",
                    stats.misses,
                ),
                (
                    "integration_cache_bypasses_total",
                    "Requests the cache stayed out of.",
                    stats.bypasses,
                ),
                (
                    "integration_cache_stale_total",
                    "Expired responses served because the upstream failed.",
                    stats.stale,
                ),
                (
                    "integration_cache_coalesced_total",
                    "Misses that waited for another request's upstream call.",
                    stats.coalesced,
                ),
                (
                    "integration_cache_retries_total",
                    "Upstream retries.",
                    stats.retries,
                ),
                (
                    "integration_cache_stored_total",
                    "Responses stored.",
                    stats.stored,
                ),
                (
                    "integration_cache_evictions_total",
                    "Responses evicted to stay within bounds.",
                    stats.evictions,
                ),
                (
                    "integration_cache_expirations_total",
                    "Responses reclaimed after expiry.",
                    stats.expirations,
                ),
                (
                    "integration_cache_invalidations_total",
                    "Responses dropped by invalidation.",
                    stats.invalidations,
                ),
            ];
            for (name, help, value) in counters {
                metrics::describe_counter!(name, help);
                metrics::counter!(name).absolute(value);
            }
            metrics::describe_gauge!("integration_cache_entries", "Responses held in memory.");
            metrics::gauge!("integration_cache_entries").set(stats.entries as f64);
            metrics::describe_gauge!(
                "integration_cache_weight",
                "Weight held, in the unit of the bound (bytes)."
            );
            metrics::gauge!("integration_cache_weight").set(stats.weight as f64);
        });
        self.0.exposition.render()
    }
}

fn stats_json(stats: &LayerStats) -> serde_json::Value {
    let mut value = serde_json::to_value(stats).unwrap_or_default();
    value["hit_ratio"] = stats.hit_ratio().into();
    value
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    text(status, "application/json", value.to_string())
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    json(
        status,
        &serde_json::json!({ "error": { "code": code, "status": status.as_u16(), "message": message } }),
    )
}

/// Serves the admin API on `listener` until `stop` turns true.
pub(crate) async fn serve(admin: Admin, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(admin = %addr, "admin API listening");
    }
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let admin = admin.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let response = admin.route(&request);
            async move { Ok::<_, Infallible>(response) }
        });
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
