//! What the container image relies on, checked with real `raft_client` processes on loopback:
//! `raft_client health` (the HEALTHCHECK), `run --advertise` (listen on one address, be known by
//! another), and a graceful SIGTERM while a subscriber's stream is open. Every wait polls with a
//! bound; children are killed on drop.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_raft_client");
const WAIT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Kills the child on drop, so a failing test leaves no process behind.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn raft_client(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    poll("the process to exit", || child.try_wait().unwrap())
}

/// A single-node cluster listening on 127.0.0.1:port but advertised as localhost:port.
fn start_node(port: u16, dir: &std::path::Path) -> Guard {
    let listen = format!("127.0.0.1:{port}");
    let advertised = format!("localhost:{port}");
    Guard(
        Command::new(BIN)
            .args(["run", "1", &listen, &format!("1={advertised}")])
            .args(["--advertise", &advertised, "--data-dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn health_advertise_and_sigterm_with_a_live_subscriber() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut node = start_node(port, dir.path());

    // health: 0 once serving.
    poll("health to report SERVING", || {
        raft_client(&["health", "--addr", &addr])
            .status
            .success()
            .then_some(())
    });

    // Leader hints name the advertised address, not the listen address.
    let st = poll("a leader", || {
        let out = raft_client(&["status", "--json", "--addr", &addr]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v[0]["role"] == "leader").then_some(v)
    });
    assert_eq!(st[0]["leader_addr"], format!("localhost:{port}"));

    // A subscriber with an open stream must not keep SIGTERM from stopping the node.
    let sent = raft_client(&[
        "send", "--addr", &addr, "--room", "r", "--author", "a", "hi",
    ]);
    assert!(sent.status.success(), "{sent:?}");
    let mut tail = Guard(
        Command::new(BIN)
            .args(["tail", "--addr", &addr, "--room", "r"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut out = tail.0.stdout.take().unwrap();
    let mut first = [0u8; 8];
    std::io::Read::read_exact(&mut out, &mut first).unwrap();
    assert_eq!(&first, b"[r #1] a");

    // SAFETY: plain kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(node.0.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = wait_exit(&mut node.0);
    assert!(
        status.success(),
        "SIGTERM with a live subscriber: {status:?}"
    );

    // health: 1 when nothing answers.
    let down = raft_client(&["health", "--addr", &addr, "--timeout-ms", "500"]);
    assert_eq!(down.status.code(), Some(1), "{down:?}");
}

/// A peer listener reachable beyond loopback without a cluster secret is an open door: the node
/// refuses to start (exit code 2, a message naming the way out) unless told --insecure-peers;
/// a weak secret is refused too.
#[test]
fn an_open_peer_port_beyond_loopback_needs_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (port, peer) = (free_port(), free_port());
    let base = [
        "run".to_string(),
        "1".to_string(),
        format!("0.0.0.0:{port}"),
        format!("1=127.0.0.1:{port}"),
        "--advertise".to_string(),
        format!("127.0.0.1:{port}"),
        "--peer-addr".to_string(),
        format!("0.0.0.0:{peer}"),
        "--data-dir".to_string(),
        dir.path().join("n1").display().to_string(),
    ];
    let args: Vec<&str> = base.iter().map(String::as_str).collect();
    let out = raft_client(&args);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--cluster-secret-file") && err.contains("--insecure-peers"),
        "{err}"
    );

    let weak = dir.path().join("weak.secret");
    std::fs::write(&weak, "short\n").unwrap();
    let mut with_weak = args.clone();
    with_weak.extend(["--cluster-secret-file", weak.to_str().unwrap()]);
    let out = raft_client(&with_weak);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16"));

    // Told so, it runs (and answers on its client port).
    let mut insecure = args.clone();
    insecure.push("--insecure-peers");
    let mut node = Guard(
        Command::new(BIN)
            .args(&insecure)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = format!("127.0.0.1:{port}");
    poll("the insecure node to answer", || {
        raft_client(&["status", "--addr", &addr])
            .status
            .success()
            .then_some(())
    });
    assert!(node.0.try_wait().unwrap().is_none());
}

#[test]
fn advertise_must_match_the_own_peer_entry() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = Command::new(BIN)
        .args(["run", "1", &format!("127.0.0.1:{port}")])
        .arg(format!("1=127.0.0.1:{port},2=127.0.0.1:1"))
        .args(["--advertise", &format!("node1:{port}"), "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--advertise"));
}
