//! Worker registry routes: public list/get, admin delete and heartbeat.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::ApiError;
use super::extract::JsonBody;
use super::views::{self, Status};
use super::{ok, AppState};
use crate::service::HeartbeatInput;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/workers", get(list))
        .route("/workers/{id}", get(get_one))
}

pub fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/workers", get(list))
        .route("/workers/{id}", get(get_one).delete(delete))
        .route("/workers/{id}/heartbeat", post(admin_heartbeat))
}

async fn list(State(st): State<AppState>) -> Result<Response, ApiError> {
    let list = st.svc.workers().list().await?;
    Ok(ok(&list.iter().map(views::worker).collect::<Vec<_>>()))
}

async fn get_one(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let w = st.svc.workers().get(&id).await?;
    Ok(ok(&views::worker(&w)))
}

async fn delete(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    st.svc.workers().delete(&id).await?;
    Ok(ok(&Status { status: "deleted" }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HeartbeatBody {
    hostname: String,
    status: String,
    providers: Option<Vec<String>>,
    capabilities: Option<Vec<String>>,
    capacity: Map<String, Value>,
}

impl From<HeartbeatBody> for HeartbeatInput {
    fn from(b: HeartbeatBody) -> Self {
        HeartbeatInput {
            hostname: b.hostname,
            status: b.status,
            providers: b.providers,
            capabilities: b.capabilities,
            capacity: b.capacity,
        }
    }
}

async fn admin_heartbeat(
    State(st): State<AppState>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<HeartbeatBody>,
) -> Result<Response, ApiError> {
    let w = st.svc.workers().heartbeat(&id, b.into()).await?;
    Ok(ok(&views::worker(&w)))
}
