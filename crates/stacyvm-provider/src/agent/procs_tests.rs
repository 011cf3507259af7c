use super::*;

fn rec(seq: u64, stream: &str) -> AgentRecord {
    AgentRecord {
        seq,
        stream: stream.into(),
        ..Default::default()
    }
}

#[test]
fn records_map_byte_exact() {
    let data = AgentRecord {
        data: base64::encode(b"a\0\xff"),
        ..rec(7, "stderr")
    };
    assert_eq!(
        to_record(data).unwrap(),
        OutputRecord::Data {
            seq: 7,
            stream: OutputStream::Stderr,
            data: b"a\0\xff".to_vec()
        }
    );
    let gap = AgentRecord {
        dropped_bytes: Some(9),
        ..rec(0, "gap")
    };
    assert_eq!(
        to_record(gap).unwrap(),
        OutputRecord::Gap {
            seq: 0,
            dropped_bytes: 9
        }
    );
    let exit = AgentRecord {
        exit_code: Some(143),
        signal: Some("TERM".into()),
        ..rec(12, "exit")
    };
    assert_eq!(
        to_record(exit).unwrap(),
        OutputRecord::Exit {
            seq: 12,
            exit_code: 143,
            signal: Some(Signal::Term)
        }
    );
    assert!(to_record(rec(0, "video")).is_err());
    let bad = AgentRecord {
        data: "!!".into(),
        ..rec(0, "pty")
    };
    assert!(to_record(bad).is_err());
}

#[test]
fn process_errors_keep_their_pid() {
    let agent = |code| ConnError::Agent {
        code,
        message: "m".into(),
    };
    assert!(matches!(
        map_err(agent(ErrorCode::ProcessNotFound), 4),
        ProviderError::ProcessNotFound(4)
    ));
    assert!(matches!(
        map_err(agent(ErrorCode::StdinClosed), 4),
        ProviderError::StdinClosed(4)
    ));
    assert!(matches!(
        map_err(agent(ErrorCode::ProcessExited), 4),
        ProviderError::ProcessExited(4)
    ));
    assert!(matches!(
        map_err(agent(ErrorCode::NotAPty), 4),
        ProviderError::NotAPty(4)
    ));
    assert!(matches!(
        map_err(agent(ErrorCode::InvalidInput), 4),
        ProviderError::InvalidInput(_)
    ));
    assert!(matches!(
        map_err(ConnError::Closed, 4),
        ProviderError::Unavailable(_)
    ));
}

#[test]
fn start_message_from_a_spec() {
    let mut spec = ProcessSpec {
        exec: crate::ExecRequest {
            command: "echo".into(),
            args: vec!["a b".into()],
            timeout: Some(Duration::from_millis(1500)),
            ..Default::default()
        },
        tag: "t".into(),
        stdin: true,
        pty: Some(PtySize { cols: 80, rows: 24 }),
        output_buffer: Some(4096),
        retain_exited: Some(Duration::from_secs(2)),
    };
    let m = start_msg(&spec).unwrap();
    assert_eq!(m.argv, ["sh", "-c", "echo 'a b'"]);
    assert_eq!(
        (m.command.as_str(), m.args.clone()),
        ("echo", vec!["a b".to_string()])
    );
    assert_eq!((m.timeout_ms, m.retain_exited_ms), (Some(1500), Some(2000)));
    assert_eq!(m.pty, Some(AgentPty { cols: 80, rows: 24 }));
    assert!(m.stdin && m.tag == "t" && m.output_buffer == Some(4096));
    spec.pty = Some(PtySize { cols: 0, rows: 24 });
    assert!(matches!(
        start_msg(&spec),
        Err(ProviderError::InvalidInput(_))
    ));
    spec.pty = None;
    spec.exec.mode = stacyvm_types::ExecMode::Argv;
    spec.exec.command = " ".into();
    assert!(matches!(
        start_msg(&spec),
        Err(ProviderError::InvalidInput(_))
    ));
}
