//! Client commands: talk to a control plane over HTTP.

use std::process::ExitCode;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::cli::{ClientArgs, ExecArgs, ResumeArgs, SpawnArgs};

pub(super) struct Client {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Client {
    pub(super) fn new(a: &ClientArgs) -> Self {
        Client {
            base: a.server.trim_end_matches('/').to_string(),
            key: a.api_key.clone(),
            http: reqwest::Client::new(),
        }
    }

    /// A request to `/api/v1{path}`, with the API key when there is one.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base));
        if self.key.is_empty() {
            req
        } else {
            req.header("X-API-Key", &self.key)
        }
    }

    /// Sends `req`; a failure to reach the server names it.
    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        req.send()
            .await
            .with_context(|| format!("contacting {}", self.base))
    }

    /// POST of a raw body (process stdin); errors as [`Self::call`].
    pub(super) async fn post_raw(&self, path: &str, body: Vec<u8>) -> anyhow::Result<Value> {
        let req = self
            .request(reqwest::Method::POST, path)
            .header("Content-Type", "application/octet-stream")
            .body(body);
        let resp = self.send(req).await?;
        let status = resp.status();
        let text = resp.text().await.context("reading response")?;
        if !status.is_success() {
            bail!("{} {}", status.as_u16(), text.trim());
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// `DELETE path`; the answer's JSON.
    pub(super) async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    pub(super) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .request(method, path)
            .header("Content-Type", "application/json");
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = self.send(req).await?;
        let status = resp.status();
        let text = resp.text().await.context("reading response")?;
        if !status.is_success() {
            bail!(failure(status, &text));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// GET of a streamed answer (`/events`): the response once its status is a success, its
    /// body still unread; errors as [`Self::call`].
    pub(super) async fn get_stream(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let resp = self.send(self.request(reqwest::Method::GET, path)).await?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            bail!(failure(status, &text));
        }
        Ok(resp)
    }
}

/// `401 UNAUTHORIZED: <message>` from an error answer's `{"code","message"}` body.
fn failure(status: reqwest::StatusCode, text: &str) -> String {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let msg = v["message"].as_str().unwrap_or(text.trim());
    let code = v["code"].as_str().unwrap_or("ERROR");
    format!("{} {code}: {msg}", status.as_u16())
}

fn print(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub async fn spawn(c: &ClientArgs, a: SpawnArgs) -> anyhow::Result<ExitCode> {
    let mut body = json!({});
    if !a.image.is_empty() {
        body["image"] = json!(a.image);
    }
    if !a.provider.is_empty() {
        body["provider"] = json!(a.provider);
    }
    if !a.ttl.is_empty() {
        body["ttl"] = json!(a.ttl);
    }
    if a.memory > 0 {
        body["memory_mb"] = json!(a.memory);
    }
    if a.vcpus > 0 {
        body["vcpus"] = json!(a.vcpus);
    }
    if !a.snapshot.is_empty() {
        body["snapshot"] = json!(a.snapshot);
    }
    if !a.volumes.is_empty() {
        let mounts = a
            .volumes
            .iter()
            .map(|s| super::volume::mount_arg(s))
            .collect::<anyhow::Result<Vec<_>>>()?;
        body["volumes"] = json!(mounts);
    }
    let v = Client::new(c)
        .call(reqwest::Method::POST, "/sandboxes", Some(body))
        .await?;
    if a.quiet {
        println!("{}", v["id"].as_str().unwrap_or_default());
    } else {
        print(&v);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn exec(c: &ClientArgs, a: ExecArgs) -> anyhow::Result<ExitCode> {
    let mut body = if a.shell {
        json!({"command": a.command.join(" ")})
    } else {
        let (cmd, args) = a.command.split_first().context("a command is required")?;
        json!({"command": cmd, "args": args, "mode": "argv"})
    };
    if !a.timeout.is_empty() {
        body["timeout"] = json!(a.timeout);
    }
    let path = format!("/sandboxes/{}/exec", a.id);
    let r = Client::new(c)
        .call(reqwest::Method::POST, &path, Some(body))
        .await?;
    print!("{}", r["stdout"].as_str().unwrap_or(""));
    eprint!("{}", r["stderr"].as_str().unwrap_or(""));
    let code = r["exit_code"].as_i64().unwrap_or(1);
    if code != 0 {
        bail!("command exited with status {code}");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn list(c: &ClientArgs) -> anyhow::Result<ExitCode> {
    let v = Client::new(c)
        .call(reqwest::Method::GET, "/sandboxes", None)
        .await?;
    let items = v.as_array().cloned().unwrap_or_default();
    println!(
        "{:<12} {:<10} {:<8} {:<24} EXPIRES",
        "ID", "STATE", "PROVIDER", "IMAGE"
    );
    for s in items {
        println!(
            "{:<12} {:<10} {:<8} {:<24} {}",
            s["id"].as_str().unwrap_or(""),
            s["state"].as_str().unwrap_or(""),
            s["provider"].as_str().unwrap_or(""),
            s["image"].as_str().unwrap_or(""),
            s["expires_at"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn kill(c: &ClientArgs, id: &str) -> anyhow::Result<ExitCode> {
    let v = Client::new(c).delete(&format!("/sandboxes/{id}")).await?;
    if v["state"] == "destroying" {
        // 202: its worker is unreachable; reconciliation finishes when it returns.
        println!("{id} destroying (its worker is unreachable; finished when it returns)");
    } else {
        println!("{id} destroyed");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn pause(c: &ClientArgs, id: &str) -> anyhow::Result<ExitCode> {
    Client::new(c)
        .call(
            reqwest::Method::POST,
            &format!("/sandboxes/{id}/pause"),
            None,
        )
        .await?;
    println!("{id} paused");
    Ok(ExitCode::SUCCESS)
}

pub async fn resume(c: &ClientArgs, a: ResumeArgs) -> anyhow::Result<ExitCode> {
    let body = (!a.ttl.is_empty()).then(|| json!({"ttl": a.ttl}));
    let v = Client::new(c)
        .call(
            reqwest::Method::POST,
            &format!("/sandboxes/{}/resume", a.id),
            body,
        )
        .await?;
    match v["expires_at"].as_str().filter(|e| !e.is_empty()) {
        Some(at) => println!("{} running, expires {at}", a.id),
        None => println!("{} running", a.id),
    }
    Ok(ExitCode::SUCCESS)
}
