//! `/templates`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Extension;
use serde::Deserialize;
use stacyvm_types::GoDuration;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

use super::dto::{self, TemplateBody};
use super::extract::{JsonBody, OptionalJson};
use super::openapi::{Conflict, NotFound, ResourceLimit, TemplateNameParam, Unavailable};
use super::views::Status;
use super::{json_response, ok, ok_each, AppState, Reply, St};
use crate::service::Caller;

pub fn routes() -> OpenApiRouter<AppState> {
    api_routes![create, list; get_one, replace, delete; spawn]
}

/// Create a template
#[utoipa::path(post, path = "/templates", operation_id = "createTemplate", tag = "templates",
    request_body = TemplateBody,
    responses(
        (status = 201, description = "Created", body = dto::TemplateView),
        (status = 409, response = Conflict),
    ))]
async fn create(State(st): St, JsonBody(b): JsonBody<TemplateBody>) -> Reply {
    let t = st.svc.templates().create(b.into()).await?;
    Ok(json_response(StatusCode::CREATED, &dto::template(&t)))
}

/// List templates (by name)
#[utoipa::path(get, path = "/templates", operation_id = "listTemplates", tag = "templates",
    responses((status = 200, description = "OK", body = Vec<dto::TemplateView>)))]
async fn list(State(st): St) -> Reply {
    Ok(ok_each(&st.svc.templates().list().await?, dto::template))
}

/// Get a template
#[utoipa::path(get, path = "/templates/{name}", operation_id = "getTemplate", tag = "templates",
    params(TemplateNameParam),
    responses(
        (status = 200, description = "OK", body = dto::TemplateView),
        (status = 404, response = NotFound),
    ))]
async fn get_one(State(st): St, Path(name): Path<String>) -> Reply {
    Ok(ok(&dto::template(&st.svc.templates().get(&name).await?)))
}

/// Replace a template
///
/// Full replace; the name comes from the path, defaults are filled as on create.
#[utoipa::path(put, path = "/templates/{name}", operation_id = "replaceTemplate",
    tag = "templates", params(TemplateNameParam), request_body = TemplateBody,
    responses(
        (status = 200, description = "OK", body = dto::TemplateView),
        (status = 404, response = NotFound),
    ))]
async fn replace(
    State(st): St,
    Path(name): Path<String>,
    JsonBody(b): JsonBody<TemplateBody>,
) -> Reply {
    Ok(ok(&dto::template(
        &st.svc.templates().replace(&name, b.into()).await?,
    )))
}

/// Delete a template
#[utoipa::path(delete, path = "/templates/{name}", operation_id = "deleteTemplate",
    tag = "templates", params(TemplateNameParam),
    responses(
        (status = 200, description = "`deleted`", body = Status),
        (status = 404, response = NotFound),
    ))]
async fn delete(State(st): St, Path(name): Path<String>) -> Reply {
    st.svc.templates().delete(&name).await?;
    Ok(ok(&Status { status: "deleted" }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = TemplateSpawnRequest)]
#[serde(default)]
struct SpawnOverrides {
    provider: Option<String>,
    #[schema(value_type = Option<GoDuration>)]
    ttl: Option<String>,
}

/// Spawn a sandbox from a template
///
/// The body is optional: `provider` and `ttl` override the template's.
#[utoipa::path(post, path = "/templates/{name}/spawn", operation_id = "spawnTemplate",
    tag = "templates", params(TemplateNameParam),
    request_body(content = Option<SpawnOverrides>),
    responses(
        (status = 201, description = "Created", body = dto::SandboxView),
        (status = 404, response = NotFound), (status = 429, response = ResourceLimit),
        (status = 503, response = Unavailable),
    ))]
async fn spawn(
    State(st): St,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    OptionalJson(b): OptionalJson<SpawnOverrides>,
) -> Reply {
    let sb = st
        .svc
        .templates()
        .spawn(&name, b.provider, b.ttl, &caller)
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &dto::sandbox_with_token(&sb),
    ))
}
