//! Property tests of the protocol's parsers of untrusted input (hardening harness,
//! docs/testing.md): RPC envelopes as a worker receives them, RPC answers and NDJSON stream
//! lines as the control plane receives them, guest-agent frames, base64 bodies. Each must
//! answer every input with a value or an error, never a panic, and what we encode must decode
//! to itself.

use std::collections::BTreeMap;
use std::io::Read;

use proptest::prelude::*;
use serde_json::{json, Value};
use stacyvm_protocol::agent::{encode_frame, read_frame, FrameError};
use stacyvm_protocol::base64;
use stacyvm_protocol::ndjson::{decode_line, LineSplitter, LineTooLong, StreamLine};
use stacyvm_protocol::rpc::{
    ExecParams, RpcCall, RpcEnvelope, RpcRequest, RpcResponse, StreamChunk, Target,
};
use stacyvm_types::{ExecMode, GoDuration, SandboxId};

/// Any JSON value, a few levels deep, with the keys the envelope and its params use mixed
/// among arbitrary ones so that generated objects often look almost right.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("id".to_string()),
        Just("method".to_string()),
        Just("worker_id".to_string()),
        Just("lease".to_string()),
        Just("params".to_string()),
        Just("sandbox_id".to_string()),
        Just("provider".to_string()),
        Just("command".to_string()),
        Just("mode".to_string()),
        Just("timeout".to_string()),
        Just("path".to_string()),
        "\\PC{0,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        // Binary fractions print and parse exactly (serde_json without `float_roundtrip`
        // may be off by an ulp on arbitrary doubles, which is not what is tested here).
        any::<i32>().prop_map(|i| json!(f64::from(i) / 8.0)),
        prop_oneof![
            Just("worker.exec".to_string()),
            Just("worker.spawn".to_string()),
            Just("worker.shutdown".to_string()),
            Just("5m0s".to_string()),
            Just("argv".to_string()),
            "\\PC{0,16}",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn exec_call() -> impl Strategy<Value = RpcCall> {
    (
        "sb-[0-9a-f]{8}",
        // Never blank: a blank command is a 400, not a round trip.
        "\\PC{0,63}[a-z]",
        prop::collection::vec("\\PC{0,16}", 0..4),
        any::<bool>(),
        prop::collection::btree_map("[A-Z_]{1,8}", "\\PC{0,16}", 0..3),
        proptest::option::of(1i64..=3_600_000_000_000),
        proptest::option::of("[a-z_][a-z0-9_.-]{0,31}"),
    )
        .prop_map(|(id, command, args, argv, env, timeout, user)| {
            RpcCall::Exec(ExecParams {
                target: Target {
                    sandbox_id: SandboxId::from(id.as_str()),
                    provider: "mock".into(),
                    runtime_id: String::new(),
                },
                command,
                args,
                mode: if argv {
                    ExecMode::Argv
                } else {
                    ExecMode::Shell
                },
                env: env.into_iter().collect::<BTreeMap<_, _>>(),
                workdir: String::new(),
                timeout: timeout.map(GoDuration),
                user: user.unwrap_or_default(),
            })
        })
}

/// A reader that hands out its bytes in the given piece sizes: frames must not depend on how
/// the transport splits them.
struct Pieces {
    data: Vec<u8>,
    at: usize,
    sizes: Vec<usize>,
    next: usize,
}

impl Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = self
            .sizes
            .get(self.next)
            .copied()
            .unwrap_or(usize::MAX)
            .max(1);
        self.next += 1;
        let n = want.min(buf.len()).min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// A worker decodes any JSON body into a typed request or a 400, never a panic or another
    /// status.
    #[test]
    fn any_envelope_decodes_or_is_a_400(v in json_value()) {
        if let Ok(env) = serde_json::from_value::<RpcEnvelope>(v.clone()) {
            if let Err(f) = env.decode() {
                prop_assert_eq!(f.status, 400, "{:?}", f);
            }
        }
        let _ = serde_json::from_value::<RpcRequest>(v);
    }

    /// The same for bytes that are not JSON at all.
    #[test]
    fn any_bytes_are_refused_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = serde_json::from_slice::<RpcRequest>(&bytes);
        let _ = serde_json::from_slice::<RpcResponse>(&bytes);
        let _ = serde_json::from_slice::<StreamChunk>(&bytes);
    }

    /// Params replaced by anything: still a typed request or a 400.
    #[test]
    fn any_params_for_a_known_method_decode_or_are_a_400(
        method in prop::sample::select(stacyvm_protocol::rpc::method::ALL.to_vec()),
        params in json_value(),
    ) {
        let env = RpcEnvelope {
            id: "r-1".into(),
            method: method.to_string(),
            worker_id: "w1".into(),
            lease: None,
            params: Some(params),
        };
        if let Err(f) = env.decode() {
            prop_assert_eq!(f.status, 400, "{:?}", f);
        }
    }

    /// What the control plane sends is what the worker decodes.
    #[test]
    fn exec_requests_round_trip(call in exec_call()) {
        let req = RpcRequest::new(call, "w1", "sb-0000abcd", None);
        let text = serde_json::to_string(&req).expect("valid");
        let back: RpcRequest = serde_json::from_str(&text).expect("valid");
        prop_assert_eq!(back, req);
    }

    /// An answer's failure is decided by status and `error` alone; any `code` text is accepted
    /// (unknown codes are dropped, not fatal: older and newer workers differ).
    #[test]
    fn answers_with_any_code_parse(code in "\\PC{0,24}", error in "\\PC{0,24}", status in 100u16..600) {
        let body = json!({"id": "r", "worker_id": "w", "error": error, "code": code});
        let r: RpcResponse = serde_json::from_value(body).expect("valid");
        let f = r.failure(status);
        prop_assert_eq!(f.is_some(), status >= 300 || !error.is_empty());
    }

    /// Agent frames: whatever we encode reads back the same, however the bytes are split.
    #[test]
    fn frames_round_trip_in_any_pieces(
        v in json_value(),
        sizes in prop::collection::vec(1usize..64, 0..64),
    ) {
        let bytes = encode_frame(&v).expect("valid");
        let mut r = Pieces { data: bytes, at: 0, sizes, next: 0 };
        let back: Option<Value> = read_frame(&mut r).expect("valid");
        prop_assert_eq!(back, Some(v));
        let end: Option<Value> = read_frame(&mut r).expect("valid");
        prop_assert_eq!(end, None);
    }

    /// Arbitrary bytes from a guest: an error or a value, never a panic, and never a body
    /// longer than the frame limit allocated.
    #[test]
    fn any_bytes_as_frames_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        let mut r = Pieces { data: bytes, at: 0, sizes: vec![], next: 0 };
        match read_frame::<_, Value>(&mut r) {
            Ok(_) | Err(FrameError::BadMagic(_)) | Err(FrameError::Io(_))
            | Err(FrameError::Json(_)) | Err(FrameError::TooLarge(_)) => {}
        }
    }

    /// A header announcing a body past the limit is refused before anything is allocated.
    #[test]
    fn oversized_frame_headers_are_refused(len in (stacyvm_protocol::agent::MAX_FRAME_LEN as u64 + 1)..=u32::MAX as u64) {
        let mut h = stacyvm_protocol::agent::MAGIC.to_vec();
        h.extend_from_slice(&(len as u32).to_be_bytes());
        let mut r = Pieces { data: h, at: 0, sizes: vec![], next: 0 };
        let is_too_large = matches!(read_frame::<_, Value>(&mut r), Err(FrameError::TooLarge(_)));
        prop_assert!(is_too_large);
    }

    /// Base64 bodies (file content over RPC): round trip, and any text decodes or is refused.
    #[test]
    fn base64_round_trips(bytes in prop::collection::vec(any::<u8>(), 0..512), junk in "\\PC{0,64}") {
        prop_assert_eq!(base64::decode(&base64::encode(&bytes)), Some(bytes));
        if let Some(v) = base64::decode(&junk) {
            prop_assert_eq!(base64::decode(&base64::encode(&v)), Some(v));
        }
    }

    /// NDJSON from a worker: the lines do not depend on where the transport split the body,
    /// and every line decodes to something or is refused.
    #[test]
    fn ndjson_lines_do_not_depend_on_the_pieces(
        body in prop::collection::vec(prop_oneof![1 => Just(b'\n'), 8 => any::<u8>()], 0..512),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
    ) {
        let whole = split(&body, &[]);
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
        at.sort_unstable();
        prop_assert_eq!(split(&body, &at), whole.clone());
        for line in whole.unwrap_or_default() {
            let _ = decode_line(&line);
        }
    }

    /// Chunks we encode as NDJSON decode to themselves.
    #[test]
    fn stream_chunks_round_trip(data in "\\PC{0,64}", exit in proptest::option::of(any::<i64>())) {
        let chunk = match exit {
            Some(code) => StreamChunk { stream: "exit".into(), data: String::new(), exit_code: Some(code) },
            None => StreamChunk { stream: "stdout".into(), data, exit_code: None },
        };
        let line = serde_json::to_vec(&RpcResponse::ok("r", "w", Some(serde_json::to_value(&chunk).expect("valid")))).expect("valid");
        prop_assert_eq!(decode_line(&line), Ok(StreamLine::Chunk(chunk)));
    }
}

/// The lines of `body` fed to a splitter in pieces cut at `at`, plus the unterminated rest.
fn split(body: &[u8], at: &[usize]) -> Result<Vec<Vec<u8>>, LineTooLong> {
    let mut s = LineSplitter::new(64);
    let mut lines = Vec::new();
    let mut from = 0;
    for &cut in at.iter().chain(std::iter::once(&body.len())) {
        lines.extend(s.push(&body[from..cut])?);
        from = cut;
    }
    lines.extend(s.finish());
    Ok(lines)
}
