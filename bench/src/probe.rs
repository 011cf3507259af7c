//! Server CPU per request for endpoints that each do a known part of a spawn or destroy, so
//! the pair's cost can be split into HTTP, store reads and store writes.

use std::time::Duration;

use reqwest::Method;

use crate::api;
use crate::server::Server;
use crate::stats::{ms, Summary, Table};
use crate::BenchError;

struct Probe {
    name: &'static str,
    work: &'static str,
    method: Method,
    /// Appended to the API base; `{id}` is replaced by a live sandbox id.
    path: &'static str,
    body: Option<&'static str>,
}

const PROBES: &[Probe] = &[
    Probe {
        name: "GET /health",
        work: "HTTP only",
        method: Method::GET,
        path: "/health",
        body: None,
    },
    Probe {
        name: "GET /sandboxes/{id}",
        work: "HTTP + 1 store read",
        method: Method::GET,
        path: "/sandboxes/{id}",
        body: None,
    },
    Probe {
        name: "POST /sandboxes/admission",
        work: "HTTP + admission (count + worker list reads)",
        method: Method::POST,
        path: "/sandboxes/admission",
        body: Some(api::SPAWN_BODY),
    },
    Probe {
        name: "POST /sandboxes/{id}/extend",
        work: "HTTP + 1 read + 1 write",
        method: Method::POST,
        path: "/sandboxes/{id}/extend",
        body: Some(r#"{"ttl":"5m"}"#),
    },
];

/// Runs each probe `n` times, sequentially on one connection; returns the printed table.
pub async fn run(server: &Server, n: usize) -> Result<String, BenchError> {
    let c = api::http_client()?;
    let base = &server.base;
    let (id, _) = api::spawn(&c, base, api::SPAWN_BODY).await?;
    let mut t = Table::new(["request", "server-side work", "p50", "srv CPU/req"]).left_columns(2);
    let mut outcome = Ok(());
    for p in PROBES {
        let url = format!("{base}{}", p.path.replace("{id}", &id));
        let cpu0 = server.cpu_time()?;
        let mut lat = Vec::with_capacity(n);
        for _ in 0..n {
            match api::call(&c, p.method.clone(), url.clone(), p.body).await {
                Ok(d) => lat.push(d),
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        let cpu = server.cpu_time()?.saturating_sub(cpu0);
        let (Some(s), Ok(count)) = (Summary::of(&lat), u32::try_from(lat.len())) else {
            break;
        };
        t.row([
            p.name.to_string(),
            p.work.to_string(),
            ms(s.p50),
            ms(cpu.checked_div(count).unwrap_or(Duration::ZERO)),
        ]);
    }
    api::destroy(&c, base, &id).await?;
    outcome?;
    Ok(format!(
        "   cost split: {n} sequential requests of each kind on one connection (ms)\n{}",
        t.render()
    ))
}
