//! Admin-only extras: the audit log.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use stacyvm_store::AdminAuditRecord;
use stacyvm_types::format_rfc3339_go;

use super::error::ApiError;
use super::{ok, AppState};
use crate::service::AuditQuery;

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

/// A positive number from the query, or the 400 `message`.
fn number(q: &HashMap<String, String>, key: &str, message: &str) -> Result<Option<i64>, ApiError> {
    q.get(key)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid input: {message}")))
        })
        .transpose()
}

/// One audit row as the API shows it (keys in alphabetical order).
#[derive(Serialize)]
struct AuditView<'a> {
    actor: &'a str,
    created_at: String,
    duration_ms: i64,
    id: i64,
    method: &'a str,
    path: &'a str,
    remote_addr: &'a str,
    request_id: &'a str,
    status: i64,
    tenant_id: &'a str,
    user_agent: &'a str,
}

fn audit_view(r: &AdminAuditRecord) -> AuditView<'_> {
    AuditView {
        actor: &r.actor,
        created_at: format_rfc3339_go(&r.created_at),
        duration_ms: r.duration_ms,
        id: r.id,
        method: &r.method,
        path: &r.path,
        remote_addr: &r.remote_addr,
        request_id: &r.request_id,
        status: r.status,
        tenant_id: &r.tenant_id,
        user_agent: &r.user_agent,
    }
}

async fn audit(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let query = AuditQuery {
        limit: number(&q, "limit", "limit must be a positive integer")?,
        status: number(&q, "status", "status must be an HTTP status code")?,
        actor: get("actor"),
        method: get("method"),
        path: get("path"),
    };
    let rows = st.svc.admin().audit(query).await?;
    if q.get("format").map(String::as_str) == Some("csv") {
        return Ok(csv(&rows));
    }
    Ok(ok(&rows.iter().map(audit_view).collect::<Vec<_>>()))
}

fn csv(rows: &[AdminAuditRecord]) -> Response {
    let mut out = String::from(
        "id,created_at,actor,method,path,status,duration_ms,request_id,remote_addr,user_agent\n",
    );
    for r in rows {
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
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"stacyvm-admin-audit.csv\"",
            ),
        ],
        out,
    )
        .into_response()
}
