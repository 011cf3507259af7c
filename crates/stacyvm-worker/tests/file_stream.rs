//! `worker.file_read_stream` / `worker.file_write_stream` over a real loopback socket with the
//! mock provider: binary-exact round trips, error shapes, and the envelope rules.
#![allow(clippy::unwrap_used)]

mod common;

use common::{fake_cp, start_worker, Rpc, TOKEN, WORKER};
use serde_json::{json, Value};
use stacyvm_protocol::{envelope_header_value, RpcEnvelope, ENVELOPE_HEADER};

const SB: &str = "sb-0000f11e";

fn params(path: &str) -> Value {
    json!({"sandbox_id": SB, "provider": "mock", "path": path})
}

fn envelope(method: &str, params: Value) -> String {
    envelope_header_value(&RpcEnvelope {
        id: format!("req-{method}"),
        method: method.into(),
        worker_id: WORKER.into(),
        lease: None,
        params: Some(params),
    })
}

/// A streamed upload; returns the status and the JSON answer.
async fn upload(rpc: &Rpc, envelope: &str, body: reqwest::Body) -> (u16, Value) {
    let r = rpc
        .http
        .post(&rpc.url)
        .header("X-Worker-ID", WORKER)
        .header("X-Worker-Token", TOKEN)
        .header(ENVELOPE_HEADER, envelope)
        .body(body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// A streamed read: status, content type, content length and the body.
async fn download(rpc: &Rpc, path: &str) -> (u16, String, Option<u64>, Vec<u8>) {
    let r = rpc
        .http
        .post(&rpc.url)
        .header("X-Worker-ID", WORKER)
        .header("X-Worker-Token", TOKEN)
        .json(&Rpc::envelope(
            "worker.file_read_stream",
            Some(params(path)),
            None,
        ))
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let len = r.content_length();
    (s, ct, len, r.bytes().await.unwrap().to_vec())
}

fn noise(len: usize) -> Vec<u8> {
    let mut seed = 0x2545_f491_u32;
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed.to_le_bytes()[1]
        })
        .collect()
}

#[tokio::test]
async fn streamed_round_trip_is_binary_exact() {
    let (cp, _) = fake_cp().await;
    let w = start_worker(&cp).await;
    let rpc = Rpc::new(&w.url);
    rpc.spawn(SB).await;

    // Sent in uneven pieces, so the worker sees a real chunked body.
    let data = noise((3 << 20) + 4_321);
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(100_003).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(pieces));
    let mut p = params("/workspace/deep/blob.bin");
    p["mode"] = json!("0755");
    let (s, v) = upload(&rpc, &envelope("worker.file_write_stream", p), body).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"], json!({"sandbox_id": SB, "size": data.len()}));
    let (s, ct, len, back) = download(&rpc, "/workspace/deep/blob.bin").await;
    assert_eq!(s, 200);
    assert_eq!(ct, "application/octet-stream");
    assert_eq!(len, Some(data.len() as u64));
    assert!(back == data, "content differs ({} bytes back)", back.len());

    // The buffered method reads the same file.
    let (s, v) = rpc
        .call("worker.file_read", params("/workspace/deep/blob.bin"))
        .await;
    assert_eq!(s, 200);
    let b64 = v["result"]["content"].as_str().unwrap();
    assert!(stacyvm_protocol::base64::decode(b64).unwrap() == data);

    // Every byte value, and an empty file.
    let all: Vec<u8> = (0..=255u8).collect();
    let (s, _) = upload(
        &rpc,
        &envelope("worker.file_write_stream", params("/workspace/all.bin")),
        all.clone().into(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(download(&rpc, "/workspace/all.bin").await.3, all);
    let (s, v) = upload(
        &rpc,
        &envelope("worker.file_write_stream", params("/workspace/empty")),
        Vec::new().into(),
    )
    .await;
    assert_eq!((s, &v["result"]["size"]), (200, &json!(0)), "{v}");
    let (s, _, len, back) = download(&rpc, "/workspace/empty").await;
    assert_eq!((s, len, back.len()), (200, Some(0), 0));
}

#[tokio::test]
async fn streamed_errors_are_json_envelopes() {
    let (cp, _) = fake_cp().await;
    let w = start_worker(&cp).await;
    let rpc = Rpc::new(&w.url);
    rpc.spawn(SB).await;

    let (s, ct, _, body) = download(&rpc, "/workspace/missing").await;
    assert_eq!((s, ct.as_str()), (404, "application/json"));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], "FILE_NOT_FOUND", "{v}");
    let (s, _, _, body) = download(&rpc, "../../etc/passwd").await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((s, v["code"].as_str()), (400, Some("BAD_REQUEST")), "{v}");

    // A rejected upload answers without the worker reading (or keeping) its body.
    let big = vec![7u8; 8 << 20];
    let (s, v) = upload(
        &rpc,
        &envelope("worker.file_write_stream", params("../../tmp/escape")),
        big.clone().into(),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("BAD_REQUEST")), "{v}");
    let mut other = params("/workspace/x");
    other["sandbox_id"] = json!("sb-00000bad");
    let (s, v) = upload(
        &rpc,
        &envelope("worker.file_write_stream", other),
        big.into(),
    )
    .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (404, Some("SANDBOX_NOT_FOUND")),
        "{v}"
    );
    let (s, v) = upload(
        &rpc,
        &envelope(
            "worker.file_write_stream",
            json!({"sandbox_id": SB, "provider": "mock"}),
        ),
        "x".into(),
    )
    .await;
    assert_eq!(s, 400, "path is required: {v}");

    // The upload method needs its envelope in the header, and only it may use the header.
    let (s, v) = rpc
        .call("worker.file_write_stream", params("/workspace/x"))
        .await;
    assert_eq!(s, 400);
    assert!(
        v["error"].as_str().unwrap().contains(ENVELOPE_HEADER),
        "{v}"
    );
    let (s, v) = upload(
        &rpc,
        &envelope("worker.file_read", params("/workspace/x")),
        "x".into(),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = upload(&rpc, "{not json", "x".into()).await;
    assert_eq!(
        (s, v["message"].as_str()),
        (400, Some("invalid worker RPC request"))
    );
    let mut wrong = serde_json::from_str::<Value>(&envelope(
        "worker.file_write_stream",
        params("/workspace/x"),
    ))
    .unwrap();
    wrong["worker_id"] = json!("worker-b");
    let (s, _) = upload(&rpc, &wrong.to_string(), "x".into()).await;
    assert_eq!(s, 403);
    assert!(!w.mock.host_root(SB).unwrap().join("workspace/x").exists());
}

#[tokio::test]
async fn streamed_methods_need_credentials() {
    let (cp, _) = fake_cp().await;
    let w = start_worker(&cp).await;
    let rpc = Rpc::new(&w.url);
    rpc.spawn(SB).await;
    let r = rpc
        .http
        .post(&rpc.url)
        .header("X-Worker-ID", WORKER)
        .header("X-Worker-Token", "wrong")
        .header(
            ENVELOPE_HEADER,
            envelope("worker.file_write_stream", params("/workspace/x")),
        )
        .body("secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = rpc
        .http
        .post(&rpc.url)
        .header("X-Worker-ID", WORKER)
        .json(&Rpc::envelope(
            "worker.file_read_stream",
            Some(params("/workspace/x")),
            None,
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(!w.mock.host_root(SB).unwrap().join("workspace/x").exists());
}
