//! An axum app with a per-user response cache in front of a slow per-user API.
//!
//! ```text
//! cargo run --example axum_app          # listens on 127.0.0.1:3000, or on $PORT
//! ```
//!
//! The user comes from `Authorization: Bearer <user>`. For the demo the token *is* the user id;
//! a real app verifies a session or JWT in [`auth`] and inserts the verified [`UserId`] the same
//! way. The cache layer only reads that extension, so it never sees an unverified identity.
//!
//! - `GET /api/integrations/status`: slow (300 ms) and per user, cached per user: MISS, then HIT.
//! - `POST /api/integrations/{name}/connect`: changes the user's data; the layer drops that
//!   user's cached responses, so their next GET sees the change (other users keep theirs).
//! - `GET /stats`: the layer's [`LayerStats`](integration_cache::LayerStats) as JSON (no auth).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use integration_cache::http::{IntegrationCacheLayer, UserId};
use serde_json::{json, Value};

/// What the slow upstream knows: each user's connected integrations.
type Connections = Arc<Mutex<HashMap<UserId, BTreeSet<String>>>>;

/// The app: the cached API behind [`auth`], and `/stats`.
fn app(layer: IntegrationCacheLayer) -> Router {
    let handle = layer.handle();
    Router::new()
        .route("/api/integrations/status", get(status))
        .route("/api/integrations/{name}/connect", post(connect))
        .layer(layer)
        .layer(middleware::from_fn(auth))
        .route("/stats", get(move || async move { Json(handle.stats()) }))
        .with_state(Connections::default())
}

/// `Authorization: Bearer <user>` becomes a [`UserId`] extension; anything else is a 401.
async fn auth(mut request: Request, next: Next) -> Response {
    let user = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .and_then(UserId::new);
    let Some(user) = user else {
        let error = json!({ "error": "send `Authorization: Bearer <user>`" });
        return (StatusCode::UNAUTHORIZED, Json(error)).into_response();
    };
    request.extensions_mut().insert(user);
    next.run(request).await
}

/// The slow per-user read the cache is for.
async fn status(
    State(connections): State<Connections>,
    Extension(user): Extension<UserId>,
) -> Json<Value> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let connected = connections.lock().unwrap().get(&user).cloned();
    Json(json!({ "user": user.as_str(), "connected": connected.unwrap_or_default() }))
}

/// A write: the layer invalidates this user's entries before the response leaves.
async fn connect(
    State(connections): State<Connections>,
    Extension(user): Extension<UserId>,
    Path(name): Path<String>,
) -> Json<Value> {
    let mut connections = connections.lock().unwrap();
    let connected = connections.entry(user.clone()).or_default();
    connected.insert(name);
    Json(json!({ "user": user.as_str(), "connected": connected }))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT").map_or(Ok(3000), |port| port.parse::<u16>());
    let port = port.map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let layer = IntegrationCacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .build()
        .expect("a valid configuration");
    let timed = "-s -o /dev/null -w '%{http_code} %header{x-cache} %{time_total}s\\n'";
    let (alice, bob) = (
        "-H 'Authorization: Bearer alice'",
        "-H 'Authorization: Bearer bob'",
    );
    let status = format!("{base}/api/integrations/status");
    println!(
        "Listening on {base}. Try (curl >= 7.84 for %header):\n\n\
         # MISS (~0.3 s), then HIT (~1 ms):\n\
         curl {timed} {alice} {status}\n\
         curl {timed} {alice} {status}\n\n\
         # bob has his own entry (MISS):\n\
         curl {timed} {bob} {status}\n\n\
         # alice connects github: her next GET is a MISS that shows it; bob's is still a HIT:\n\
         curl -s -X POST {alice} {base}/api/integrations/github/connect; echo\n\
         curl -si {alice} {status}\n\
         curl {timed} {bob} {status}\n\n\
         # What the cache did:\n\
         curl -s {base}/stats\n"
    );
    axum::serve(listener, app(layer)).await
}

/// `cargo test --example axum_app`: the app in process, on paused time.
#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    #[tokio::test(start_paused = true)]
    async fn a_write_drops_only_the_writers_entries() {
        let app = app(IntegrationCacheLayer::new());
        let call = |method: &str, uri: &str, user: &str| {
            let request = Request::builder().method(method).uri(uri);
            let request = request.header(header::AUTHORIZATION, format!("Bearer {user}"));
            app.clone().oneshot(request.body(Body::empty()).unwrap())
        };
        let x_cache = |response: &Response| response.headers()["x-cache"].clone();
        let status = "/api/integrations/status";
        for user in ["alice", "bob"] {
            let miss = call("GET", status, user).await.unwrap();
            assert_eq!(x_cache(&miss), "MISS");
            axum::body::to_bytes(miss.into_body(), usize::MAX)
                .await
                .unwrap();
        }
        assert_eq!(x_cache(&call("GET", status, "alice").await.unwrap()), "HIT");
        call("POST", "/api/integrations/github/connect", "alice")
            .await
            .unwrap();
        assert_eq!(
            x_cache(&call("GET", status, "alice").await.unwrap()),
            "MISS"
        );
        assert_eq!(x_cache(&call("GET", status, "bob").await.unwrap()), "HIT");
    }
}
