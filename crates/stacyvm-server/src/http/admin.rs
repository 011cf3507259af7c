//! Admin-only extras: the audit log.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use stacyvm_store::AdminAuditRecord;
use stacyvm_types::format_rfc3339_go;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::{ok, AppState, Reply, St};
use crate::service::AuditQuery;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(audit))
}

/// One CSV field. Text a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab or CR
/// first: OWASP's "CSV injection") gets a leading `'`, so `=HYPERLINK(...)` in a client-chosen
/// path or user agent stays text.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
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
#[derive(Serialize, ToSchema)]
#[schema(as = AuditRecord)]
struct AuditView<'a> {
    actor: &'a str,
    #[schema(format = DateTime)]
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
    let e = &r.entry;
    AuditView {
        actor: &e.actor,
        created_at: format_rfc3339_go(&r.created_at),
        duration_ms: e.duration_ms,
        id: r.id,
        method: &e.method,
        path: &e.path,
        remote_addr: &e.remote_addr,
        request_id: &e.request_id,
        status: e.status,
        tenant_id: &e.tenant_id,
        user_agent: &e.user_agent,
    }
}

/// Admin audit log (newest first)
#[utoipa::path(get, path = "/audit", operation_id = "adminAudit", tag = "admin",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Default 100"),
        ("actor" = Option<String>, Query), ("method" = Option<String>, Query),
        ("path" = Option<String>, Query),
        ("status" = Option<i64>, Query, minimum = 100, maximum = 599),
        ("format" = Option<String>, Query, description = "`json` (default) or `csv`"),
    ),
    responses(
        (status = 200, description = "JSON records, or CSV with `format=csv`", content(
            (Vec<AuditView> = "application/json"), (String = "text/csv"))),
        (status = 400, response = super::openapi::BadRequest),
    ))]
async fn audit(State(st): St, Query(q): Query<HashMap<String, String>>) -> Reply {
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
        let e = &r.entry;
        let fields = [
            r.id.to_string(),
            format_rfc3339_go(&r.created_at),
            csv_field(&e.actor),
            csv_field(&e.method),
            csv_field(&e.path),
            e.status.to_string(),
            e.duration_ms.to_string(),
            csv_field(&e.request_id),
            csv_field(&e.remote_addr),
            csv_field(&e.user_agent),
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

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("+1"), "'+1");
        assert_eq!(csv_field("-2+3"), "'-2+3");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("/api/v1/admin/audit"), "/api/v1/admin/audit");
    }
}
