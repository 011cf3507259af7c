//! The OpenAPI document, generated: each handler's `#[utoipa::path]` and the `ToSchema` of its
//! request and response types describe it, and `utoipa_axum::routes!` registers a handler and
//! its documentation in one step (`http::router`). This module holds what belongs to no
//! handler: info, servers, tags, security schemes, the shared error responses and the
//! finishing pass that adds what the middleware layers do to every route.

mod responses;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::http::AppState;
use bytes::Bytes;
use serde_json::{json, Value};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

pub use responses::*;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "StacyVM control plane API",
        version = "0.1.0",
        description = include_str!("intro.md"),
    ),
    servers((url = "/api/v1")),
    tags(
        (name = "sandboxes"), (name = "exec"), (name = "processes"), (name = "files"), (name = "templates"),
        (name = "volumes"), (name = "snapshots"),
        (name = "quotas"), (name = "workers"), (name = "system"), (name = "admin"),
        (name = "worker"),
    ),
    security(("ApiKey" = []), ("AdminApiKey" = []), ()),
    components(
        schemas(super::error::ErrorBody, crate::events::EventWire, OwnerIdString),
        responses(
            BadRequest, Unauthorized, Forbidden, NotFound, FileNotFound, Conflict, Timeout,
            PayloadTooLarge, ResourceLimit, InternalError, Unavailable, ProcessNotFound,
            ProcessConflict, SandboxPaused, WatchConflict, PauseConflict, WorkerUnauthorized,
            WorkerForbidden, WorkerAuthUnavailable, VolumeConflict, VolumeInUse, SpawnConflict, SnapshotNotFound,
        ),
    ),
    modifiers(&SecuritySchemes),
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        let header = |name: &str, description: &str| {
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                name,
                description,
            )))
        };
        c.add_security_scheme(
            "ApiKey",
            header("X-API-Key", "`auth.api_key` (or the admin key)"),
        );
        c.add_security_scheme(
            "AdminApiKey",
            header(
                "X-Admin-API-Key",
                "`auth.admin_api_key` (or the API key on non-admin routes)",
            ),
        );
        c.add_security_scheme(
            "WorkerId",
            header("X-Worker-ID", "The calling worker's id (worker routes)"),
        );
        c.add_security_scheme(
            "WorkerToken",
            header(
                "X-Worker-Token",
                "Static worker token (`auth.worker_token` / `auth.worker_tokens[id]`) or a \
                 signed `stacyvm-worker-v1.` token",
            ),
        );
        c.add_security_scheme(
            "WorkerBearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The worker token as `Authorization: Bearer <token>`"))
                    .build(),
            ),
        );
    }
}

/// Where a route sits decides its auth, as the router's layers do: `/admin/*` behind
/// `require_admin`, `/worker/*` behind worker credentials, the rest behind the API key.
#[derive(Clone, Copy, PartialEq)]
enum Area {
    Api,
    Admin,
    Worker,
}

fn area(path: &str) -> Area {
    if path.starts_with("/admin/") {
        Area::Admin
    } else if path.starts_with("/worker/") {
        Area::Worker
    } else {
        Area::Api
    }
}

/// What every operation gets from the layers around it, added after the routes are collected:
/// its security, the auth and internal-error answers, 400/413 for a JSON body, and for the
/// routes mounted a second time under `/admin` (quotas, workers, providers, metrics) the
/// `admin` tag and an operation id ending in `Admin`.
pub fn finish(doc: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(doc).unwrap_or_default();
    let public_ids: Vec<String> = operations(&doc)
        .filter(|(path, _)| area(path) != Area::Admin)
        .filter_map(|(_, op)| op["operationId"].as_str().map(str::to_string))
        .collect();
    let Some(paths) = doc["paths"].as_object_mut() else {
        return doc;
    };
    for (path, item) in paths.iter_mut() {
        let area = area(path);
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            let Some(op) = op.as_object_mut() else {
                continue;
            };
            // Quota writes need the admin key on `/quotas` too (`quota_writes_need_admin`).
            let auth_area = if area == Area::Api
                && path.starts_with("/quotas/")
                && matches!(method.as_str(), "put" | "delete")
            {
                Area::Admin
            } else {
                area
            };
            let has_json_body = op
                .get("requestBody")
                .is_some_and(|b| b["content"].get("application/json").is_some());
            let (security, standard): (Value, &[(&str, &str)]) = match auth_area {
                Area::Api => (
                    json!([{"ApiKey": []}, {"AdminApiKey": []}, {}]),
                    &[("401", "Unauthorized"), ("500", "InternalError")],
                ),
                Area::Admin => (
                    json!([{"AdminApiKey": []}, {"ApiKey": []}, {}]),
                    &[
                        ("401", "Unauthorized"),
                        ("403", "Forbidden"),
                        ("500", "InternalError"),
                    ],
                ),
                Area::Worker => (
                    json!([{"WorkerId": [], "WorkerToken": []}, {"WorkerId": [], "WorkerBearer": []}]),
                    &[
                        ("401", "WorkerUnauthorized"),
                        ("403", "WorkerForbidden"),
                        ("500", "InternalError"),
                        ("503", "WorkerAuthUnavailable"),
                    ],
                ),
            };
            op.insert("security".into(), security);
            let body: &[(&str, &str)] = if has_json_body {
                &[("400", "BadRequest"), ("413", "PayloadTooLarge")]
            } else {
                &[]
            };
            if let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) {
                for (status, name) in standard.iter().chain(body) {
                    responses.entry(*status).or_insert_with(
                        || json!({"$ref": format!("#/components/responses/{name}")}),
                    );
                }
            }
            if area == Area::Admin {
                op.insert("tags".into(), json!(["admin"]));
                if let Some(id) = op.get("operationId").and_then(Value::as_str) {
                    if public_ids.iter().any(|p| p == id) {
                        let id = format!("{id}Admin");
                        op.insert("operationId".into(), json!(id));
                    }
                }
            }
        }
    }
    doc
}

/// `(path, operation)` for every operation in `doc`.
fn operations(doc: &Value) -> impl Iterator<Item = (&str, &Value)> {
    doc["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flatten()
                .map(move |(_, op)| (path.as_str(), op))
        })
        .filter(|(_, op)| op.get("responses").is_some())
}

/// The finished document as served (built once per router).
#[derive(Clone)]
pub struct Document(Bytes);

impl Document {
    pub fn new(doc: utoipa::openapi::OpenApi) -> Self {
        let mut bytes = serde_json::to_vec(&finish(doc)).unwrap_or_default();
        bytes.push(b'\n');
        Document(bytes.into())
    }
}

/// This document
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "system",
    responses((status = 200, description = "OK", content_type = "application/json", body = Object)),
)]
pub async fn serve(State(st): State<AppState>) -> Response {
    let doc = st.openapi.get().map(|d| d.0.clone()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], doc).into_response()
}
