//! The launcher's chaos mode, end to end: three real nodes, a minute of kills, pauses,
//! partitions and leader isolation under load, then the history check. The test asserts the
//! launcher's verdict, so any lost, duplicated or non-linearizable operation fails it.

use std::process::Command;

/// `n` consecutive free ports on 127.0.0.1 (checked by binding them all at once).
fn free_base_port(n: u16) -> u16 {
    for _ in 0..200 {
        let base = 20_000 + fastrand::u16(0..30_000);
        let all: Vec<_> = (0..n)
            .map(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)))
            .collect();
        if all.iter().all(|l| l.is_ok()) {
            return base;
        }
    }
    panic!("no free port range");
}

#[test]
fn chaos_run_is_linearizable_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = free_base_port(3);
    let duration = std::env::var("RUSTYRAFT_CHAOS_SECS").unwrap_or_else(|_| "60".into());
    let out = Command::new(env!("CARGO_BIN_EXE_run_n_clients"))
        .args(["3", "--chaos", "--duration", &duration, "--seed", "1"])
        .arg("--base-port")
        .arg(base.to_string())
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--bin")
        .arg(env!("CARGO_BIN_EXE_raft_client"))
        .output()
        .expect("run_n_clients runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        out.status.success()
            && last.starts_with("verdict: linearizable")
            && last.ends_with("lost=0 duplicated=0"),
        "chaos run failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // It really did something: faults were injected and operations acknowledged.
    let field = |name: &str| -> u64 {
        last.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let secs: u64 = duration.parse().unwrap_or(60);
    assert!(field("faults=") >= (secs / 10).max(2), "{last}");
    assert!(field("ops=") >= 100, "{last}");
    assert!(
        dir.path().join("history.jsonl").is_file(),
        "the history is kept for replay"
    );
}
