//! Processes run as another account (`ProcStart.user`). The agent runs these tests as root,
//! as it runs in a sandbox.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use stacyvm_protocol::agent::{AgentPty, ErrorCode, GuestMsg, HostMsg, ProcStart};

use super::tests::{sh, split, Conn};

fn as_user(script: &str, user: &str) -> ProcStart {
    ProcStart {
        user: user.into(),
        ..sh(script)
    }
}

fn output(c: &mut Conn, req: ProcStart) -> (String, Option<i32>) {
    let p = c.start(req);
    let (streams, _, exit) = split(&c.read(p.pid, 0, true));
    let text = streams
        .into_values()
        .map(|b| String::from_utf8(b).unwrap())
        .collect::<String>();
    (text, exit.and_then(|e| e.exit_code))
}

#[test]
fn a_process_runs_as_the_named_account_with_its_home() {
    // SAFETY: geteuid cannot fail.
    #[allow(unsafe_code)]
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "the agent's tests run as root, as the agent does");
    let mut c = Conn::open();
    let script = "echo $(id -u) $(id -g) $HOME $USER $LOGNAME";
    let (out, code) = output(&mut c, as_user(script, "nobody"));
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.trim(), "65534 65534 /nonexistent nobody nobody");
    // By uid, and the request's own environment wins over the account's.
    let mut req = as_user("echo $(id -u) $HOME", "65534");
    req.env.insert("HOME".into(), "/tmp".into());
    assert_eq!(output(&mut c, req).0.trim(), "65534 /tmp");
    // Without a user: the agent's own (root), untouched.
    assert_eq!(output(&mut c, sh("id -u")).0.trim(), "0");
    // On a terminal too.
    let mut pty = as_user("id -un", "nobody");
    pty.pty = Some(AgentPty { cols: 80, rows: 24 });
    let (out, code) = output(&mut c, pty);
    assert_eq!((out.trim(), code), ("nobody", Some(0)));
    // An exec (the sync path) as well.
    let mut exec = as_user("id -u", "nobody");
    exec.exec = true;
    assert_eq!(output(&mut c, exec).0.trim(), "65534");
}

#[test]
fn an_unknown_account_is_the_callers_mistake() {
    let mut c = Conn::open();
    match c.call(HostMsg::ProcStart(as_user("true", "no-such-user-here"))) {
        GuestMsg::Error { code, message } => {
            assert_eq!(code, ErrorCode::InvalidInput);
            assert!(message.contains("no-such-user-here"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
