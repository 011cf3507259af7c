//! Rendering of `stacyvm worker certify`'s report as text, JSON or Markdown.

use super::certify::{Format, Report, Status};

pub fn render(r: &Report, format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(r)? + "\n",
        Format::Text => text(r),
        Format::Markdown => markdown(r),
    })
}

fn label(s: Status) -> &'static str {
    match s {
        Status::Pass => "PASS",
        Status::Warn => "WARN",
        Status::Fail => "FAIL",
    }
}

fn text(r: &Report) -> String {
    let mut out = format!(
        "worker identity certification: {}\nworker: {}\nconfig: {}\n\n",
        label(r.result),
        if r.worker_id.is_empty() {
            "(hostname)"
        } else {
            &r.worker_id
        },
        r.config
    );
    let width = r.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in &r.checks {
        out.push_str(&format!(
            "{}  {:width$}  {}\n",
            label(c.status),
            c.name,
            c.detail
        ));
    }
    out
}

fn markdown(r: &Report) -> String {
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let mut out = format!(
        "# Worker identity certification\n\n- Result: **{}**\n- Worker: `{}`\n- Config: `{}`\n- Production rules: {}\n\n| Check | Status | Detail |\n|---|---|---|\n",
        label(r.result),
        if r.worker_id.is_empty() { "(hostname)" } else { &r.worker_id },
        r.config,
        if r.production { "yes" } else { "no" },
    );
    for c in &r.checks {
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            cell(&c.name),
            label(c.status),
            cell(&c.detail)
        ));
    }
    out
}
