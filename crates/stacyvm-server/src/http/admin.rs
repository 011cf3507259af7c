//! Admin-only extras: the audit log.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use stacyvm_store::AuditFilter;
use stacyvm_types::format_rfc3339_go;

use super::error::ApiError;
use super::{ok, AppState};

pub fn routes() -> Router<AppState> {
    Router::new().route("/audit", get(audit))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

async fn audit(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let limit = match q.get("limit").filter(|s| !s.is_empty()) {
        None => 100,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                ApiError::bad_request("invalid input: limit must be a positive integer")
            })?
            .min(500),
    };
    let status = match q.get("status").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            s.parse::<i64>()
                .ok()
                .filter(|n| (100..600).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request("invalid input: status must be an HTTP status code")
                })?,
        ),
    };
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let filter = AuditFilter {
        limit,
        actor: get("actor"),
        method: get("method"),
        path: get("path"),
        status,
    };
    let rows = st
        .svc
        .store
        .list_admin_audit(&filter)
        .await
        .map_err(crate::error::ServiceError::from)?;
    if q.get("format").map(String::as_str) == Some("csv") {
        let mut out = String::from("id,created_at,actor,method,path,status,duration_ms,request_id,remote_addr,user_agent\n");
        for r in &rows {
            let fields = [
                r.id.to_string(),
                format_rfc3339_go(&r.created_at),
                csv_field(&r.actor),
                csv_field(&r.method),
                csv_field(&r.path),
                r.status.to_string(),
                r.duration_ms.to_string(),
                csv_field(&r.request_id),
                csv_field(&r.remote_addr),
                csv_field(&r.user_agent),
            ];
            out.push_str(&fields.join(","));
            out.push('\n');
        }
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"stacyvm-admin-audit.csv\"",
                ),
            ],
            out,
        )
            .into_response());
    }
    let v: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({"id": r.id, "actor": r.actor, "method": r.method, "path": r.path, "status": r.status,
                "duration_ms": r.duration_ms, "request_id": r.request_id, "remote_addr": r.remote_addr,
                "user_agent": r.user_agent, "tenant_id": r.tenant_id, "created_at": format_rfc3339_go(&r.created_at)})
        })
        .collect();
    Ok(ok(&v))
}
