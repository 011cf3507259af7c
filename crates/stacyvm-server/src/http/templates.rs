//! `/templates`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use serde_json::json;

use super::dto::{self, TemplateBody};
use super::error::ApiError;
use super::extract::{JsonBody, OptionalJson};
use super::{json_response, ok, AppState};
use crate::service::Caller;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/templates", post(create).get(list))
        .route(
            "/templates/{name}",
            get(get_one).put(replace).delete(delete),
        )
        .route("/templates/{name}/spawn", post(spawn))
}

async fn create(
    State(st): State<AppState>,
    JsonBody(b): JsonBody<TemplateBody>,
) -> Result<Response, ApiError> {
    let t = st.svc.templates().create(b.into()).await?;
    Ok(json_response(StatusCode::CREATED, &dto::template(&t)))
}

async fn list(State(st): State<AppState>) -> Result<Response, ApiError> {
    let v: Vec<_> = st
        .svc
        .templates()
        .list()
        .await?
        .iter()
        .map(dto::template)
        .collect();
    Ok(ok(&v))
}

async fn get_one(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(ok(&dto::template(&st.svc.templates().get(&name).await?)))
}

async fn replace(
    State(st): State<AppState>,
    Path(name): Path<String>,
    JsonBody(b): JsonBody<TemplateBody>,
) -> Result<Response, ApiError> {
    Ok(ok(&dto::template(
        &st.svc.templates().replace(&name, b.into()).await?,
    )))
}

async fn delete(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    st.svc.templates().delete(&name).await?;
    Ok(ok(&json!({"status": "deleted"})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SpawnOverrides {
    provider: Option<String>,
    ttl: Option<String>,
}

async fn spawn(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    OptionalJson(b): OptionalJson<SpawnOverrides>,
) -> Result<Response, ApiError> {
    let sb = st
        .svc
        .templates()
        .spawn(&name, b.provider, b.ttl, &caller)
        .await?;
    Ok(json_response(StatusCode::CREATED, &dto::sandbox(&sb)))
}
