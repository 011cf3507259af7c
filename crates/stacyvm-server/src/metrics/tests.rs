use super::*;

fn sample<'a>(out: &'a str, prefix: &str) -> Option<&'a str> {
    out.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
}

#[test]
fn exec_counters_are_created_up_front_and_count_by_labels() {
    let m = Metrics::new(None);
    m.exec_finished(ExecKind::Sync, ExecMode::Argv, ExecOutcome::ExitNonzero);
    m.exec_finished(ExecKind::Sync, ExecMode::Argv, ExecOutcome::ExitNonzero);
    m.exec_finished(ExecKind::Stream, ExecMode::Shell, ExecOutcome::Cancelled);
    let out = m.render(Gauges::default());
    assert!(out.contains("# TYPE stacyvm_exec_total counter\n"), "{out}");
    // 2 kinds × 2 modes × 5 outcomes, zero until counted.
    assert_eq!(out.matches("\nstacyvm_exec_total{").count(), 20, "{out}");
    let v = |labels: &str| sample(&out, &format!("stacyvm_exec_total{{{labels}}}"));
    assert_eq!(
        v("kind=\"sync\",mode=\"argv\",outcome=\"exit_nonzero\""),
        Some("2")
    );
    assert_eq!(
        v("kind=\"stream\",mode=\"shell\",outcome=\"cancelled\""),
        Some("1")
    );
    assert_eq!(v("kind=\"sync\",mode=\"shell\",outcome=\"ok\""), Some("0"));
    // No worker client: no RPC family.
    assert!(!out.contains("stacyvm_worker_rpc"), "{out}");
}

#[test]
fn exec_outcomes_follow_the_provider_result() {
    assert_eq!(ExecOutcome::of(Some(&Ok(0))), ExecOutcome::Ok);
    assert_eq!(ExecOutcome::of(Some(&Ok(3))), ExecOutcome::ExitNonzero);
    assert_eq!(
        ExecOutcome::of(Some(&Err(ProviderError::Timeout))),
        ExecOutcome::Timeout
    );
    assert_eq!(
        ExecOutcome::of(Some(&Err(ProviderError::SandboxNotFound("x".into())))),
        ExecOutcome::Error
    );
    assert_eq!(ExecOutcome::of(None), ExecOutcome::Cancelled);
}

#[test]
fn scrape_gauges_come_first_then_every_live_family() {
    let rpc = RpcMetrics::default();
    let m = Metrics::new(Some(&rpc));
    OperationSeries::new(m.operations(), "spawn", "mock").observe(Duration::from_millis(2), false);
    let mut g = Gauges::default();
    g.one("stacyvm_uptime_seconds", "Process uptime in seconds.", 7.0);
    let out = m.render(g);
    assert!(
        out.starts_with("# HELP stacyvm_uptime_seconds Process uptime in seconds.\n"),
        "{out}"
    );
    // A family without series (no request yet) is left out entirely.
    assert!(!out.contains("stacyvm_http_request"), "{out}");
    for family in [
        "# TYPE stacyvm_operation_duration_seconds histogram",
        "# TYPE stacyvm_worker_rpc_duration_seconds histogram",
    ] {
        assert!(out.lines().any(|l| l == family), "{family} missing:\n{out}");
    }
    assert_eq!(
        sample(
            &out,
            "stacyvm_operation_duration_seconds_count{operation=\"spawn\",provider=\"mock\",outcome=\"ok\"}"
        ),
        Some("1"),
        "{out}"
    );
    // Every known worker method has its series before the first call.
    assert!(
        out.contains("method=\"worker.spawn\",outcome=\"failed\""),
        "{out}"
    );
}
