//! `stacyvm cp SRC DST`: copies one file into or out of a sandbox, like `docker cp`. One side
//! is `<sandbox-id>:<path>`, the other a local path or `-` (stdin / stdout). Both directions
//! stream (`PUT` / `GET …/files`), so the file's size does not bound the CLI's memory.

use std::process::ExitCode;

use anyhow::{bail, Context};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use crate::cli::{ClientArgs, CpArgs};

/// One side of a copy.
#[derive(Debug, PartialEq, Eq)]
enum End<'a> {
    Sandbox { id: &'a str, path: &'a str },
    Local(&'a str),
}

/// `sb-1:/workspace/x` is a sandbox path; anything else (including `./a:b` and `/a:b`, which
/// start like local paths) is local.
fn end(s: &str) -> End<'_> {
    match s.split_once(':') {
        Some((id, path))
            if !id.is_empty() && !id.contains('/') && !id.starts_with('.') && !path.is_empty() =>
        {
            End::Sandbox { id, path }
        }
        _ => End::Local(s),
    }
}

fn request(
    c: &ClientArgs,
    method: reqwest::Method,
    id: &str,
    path: &str,
) -> reqwest::RequestBuilder {
    let url = format!(
        "{}/api/v1/sandboxes/{id}/files",
        c.server.trim_end_matches('/')
    );
    let mut req = reqwest::Client::new()
        .request(method, url)
        .query(&[("path", path)]);
    if !c.api_key.is_empty() {
        req = req.header("X-API-Key", &c.api_key);
    }
    req
}

/// The error an answer carries (`404 FILE_NOT_FOUND: …`), as the other client commands say it.
async fn failure(resp: reqwest::Response) -> anyhow::Error {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let code = v["code"].as_str().unwrap_or("ERROR");
    let msg = v["message"].as_str().unwrap_or(text.trim());
    anyhow::anyhow!("{status} {code}: {msg}")
}

pub async fn cp(c: &ClientArgs, a: CpArgs) -> anyhow::Result<ExitCode> {
    match (end(&a.src), end(&a.dst)) {
        (End::Local(src), End::Sandbox { id, path }) => {
            let body = if src == "-" {
                reqwest::Body::wrap_stream(ReaderStream::new(tokio::io::stdin()))
            } else {
                let f = tokio::fs::File::open(src)
                    .await
                    .with_context(|| format!("opening {src}"))?;
                reqwest::Body::wrap_stream(ReaderStream::new(f))
            };
            let mut req = request(c, reqwest::Method::PUT, id, path)
                .header("Content-Type", "application/octet-stream")
                .body(body);
            if let Some(mode) = &a.mode {
                req = req.query(&[("mode", mode)]);
            }
            let resp = req
                .send()
                .await
                .with_context(|| format!("contacting {}", c.server))?;
            if !resp.status().is_success() {
                return Err(failure(resp).await);
            }
        }
        (End::Sandbox { id, path }, End::Local(dst)) => {
            let resp = request(c, reqwest::Method::GET, id, path)
                .send()
                .await
                .with_context(|| format!("contacting {}", c.server))?;
            if !resp.status().is_success() {
                return Err(failure(resp).await);
            }
            let mut out: Box<dyn tokio::io::AsyncWrite + Unpin> = if dst == "-" {
                Box::new(tokio::io::stdout())
            } else {
                Box::new(
                    tokio::fs::File::create(dst)
                        .await
                        .with_context(|| format!("creating {dst}"))?,
                )
            };
            let mut body = resp.bytes_stream();
            while let Some(chunk) = body.next().await {
                out.write_all(&chunk.context("reading the file from the sandbox")?)
                    .await
                    .with_context(|| format!("writing {dst}"))?;
            }
            out.flush().await?;
        }
        (End::Local(_), End::Local(_)) => {
            bail!("one side must be a sandbox path, <sandbox-id>:<path>")
        }
        (End::Sandbox { .. }, End::Sandbox { .. }) => {
            bail!("copying between two sandboxes is not supported; copy through a local file")
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends() {
        assert_eq!(
            end("sb-1:/workspace/a"),
            End::Sandbox {
                id: "sb-1",
                path: "/workspace/a"
            }
        );
        assert_eq!(
            end("sb-1:rel"),
            End::Sandbox {
                id: "sb-1",
                path: "rel"
            }
        );
        for local in ["-", "./a:b", "/tmp/a:b", "file.txt", "sb-1:", ":x"] {
            assert_eq!(end(local), End::Local(local), "{local}");
        }
    }
}
