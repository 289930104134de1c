//! The metrics as an operator sees them: a real Prometheus (Debian's `prometheus` package)
//! scrapes a real 3-node cluster every second, and every assertion goes through Prometheus's
//! query API. Proves that every node's `/metrics` is scrapable (`up`), that the proposals
//! counter follows the messages sent, that the leader-change counter moves on the survivors
//! after the leader is killed with SIGKILL, and that exactly one node then reports the leader
//! role. It also checks each node's `/healthz` and `/readyz` directly.
//!
//! Setup installs the package when it is missing (`apt-get`, as CI runs as root) and fails with
//! a clear message if it cannot; `RUSTYRAFT_SKIP_PROMETHEUS=1` skips the test explicitly.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;

/// Prometheus's binary, installed from Debian's package if missing.
fn ensure_prometheus() -> PathBuf {
    let path = PathBuf::from("/usr/bin/prometheus");
    if path.exists() {
        return path;
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "prometheus"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        // A fresh machine may have no package lists yet.
        let _ = Command::new("apt-get").arg("update").status();
        assert!(
            install(),
            "cannot install Prometheus: `apt-get install -y --no-install-recommends \
             prometheus` failed (run it as root, or set RUSTYRAFT_SKIP_PROMETHEUS=1 to skip)"
        );
    }
    assert!(
        path.exists(),
        "the prometheus package did not install {path:?}"
    );
    path
}

/// Kills Prometheus when the test ends, however it ends.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A plain HTTP/1.0 GET (the test needs no HTTP client crate): the body, if the status is 200.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.1 200").then(|| body.to_string()))
}

/// An instant query through Prometheus's API: (labels, value) per series.
fn query(prom: &str, q: &str) -> Option<Vec<(serde_json::Value, f64)>> {
    let body = http_get(prom, &format!("/api/v1/query?query={}", encode(q)))?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    if v["status"] != "success" {
        return None;
    }
    v["data"]["result"]
        .as_array()?
        .iter()
        .map(|r| Some((r["metric"].clone(), r["value"][1].as_str()?.parse().ok()?)))
        .collect()
}

/// The single value of a query that yields one series.
fn scalar(prom: &str, q: &str) -> Option<f64> {
    let r = query(prom, q)?;
    (r.len() == 1).then(|| r[0].1)
}

/// A counter's value read from a node's own `/metrics`.
fn node_metric(http: &str, line_prefix: &str) -> f64 {
    let text = http_get(http, "/metrics").expect("node /metrics answers");
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line_prefix} not in /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_cluster() {
    if std::env::var("RUSTYRAFT_SKIP_PROMETHEUS").is_ok_and(|v| v == "1") {
        eprintln!("RUSTYRAFT_SKIP_PROMETHEUS=1: skipping the Prometheus test");
        return;
    }
    let bin = ensure_prometheus();
    let mut c = Cluster::start_with_http(3, &[]);
    let leader = c.leader().await;
    // With a leader elected and nothing to apply, every node is alive and ready.
    for addr in c.http.values() {
        let a = addr.clone();
        wait_for("/healthz and /readyz to answer 200", || {
            let a = a.clone();
            async move {
                let ok = |p: &str| http_get(&a, p).is_some_and(|b| b == "ok\n");
                (ok("/healthz") && ok("/readyz")).then_some(())
            }
        })
        .await;
    }

    // One static config per node, labelled with its id.
    let mut yml = String::from(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
         - job_name: rustyraft\n    static_configs:\n",
    );
    for (id, addr) in &c.http {
        yml.push_str(&format!(
            "      - targets: ['{addr}']\n        labels: {{ node: '{id}' }}\n"
        ));
    }
    let cfg = c.dir.path().join("prometheus.yml");
    std::fs::write(&cfg, yml).unwrap();
    let prom = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(c.dir.path().join("prometheus.log")).unwrap();
    let _p = Prometheus(
        Command::new(&bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                c.dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={prom}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus"),
    );

    // Every node is up.
    let p = prom.clone();
    wait_for("Prometheus to see all 3 nodes up", || {
        let p = p.clone();
        async move { (scalar(&p, "count(up{job=\"rustyraft\"} == 1)")? == 3.0).then_some(()) }
    })
    .await;

    // The proposals counter follows the messages sent.
    let ok = "sum(rustyraft_proposals_total{outcome=\"ok\"})";
    let before = scalar(&prom, ok).expect("proposals counter is scraped");
    for i in 0..5 {
        send_any(&c.live_addrs(), "general", "hi", &format!("prom-{i}")).await;
    }
    let p = prom.clone();
    wait_for("Prometheus to count the 5 proposals", || {
        let p = p.clone();
        async move { (scalar(&p, ok)? >= before + 5.0).then_some(()) }
    })
    .await;
    let stored = format!("rustyraft_messages_stored{{node=\"{leader}\"}}");
    assert!(
        scalar(&prom, &stored).is_some_and(|v| v >= 5.0),
        "messages_stored on the leader"
    );

    // Kill -9 the leader: the survivors see a new leader, and Prometheus sees them count it.
    let survivors: Vec<u64> = c.live().into_iter().filter(|&id| id != leader).collect();
    let seen: Vec<f64> = survivors
        .iter()
        .map(|id| node_metric(&c.http[id], "rustyraft_leader_changes_total "))
        .collect();
    c.kill9(leader);
    let new_leader = c.leader().await;
    assert_ne!(new_leader, leader);
    for (id, before) in survivors.iter().zip(seen) {
        let q = format!("rustyraft_leader_changes_total{{node=\"{id}\"}}");
        let p = prom.clone();
        wait_for("Prometheus to see the leader change", || {
            let (p, q) = (p.clone(), q.clone());
            async move { (scalar(&p, &q)? > before).then_some(()) }
        })
        .await;
    }
    let p = prom.clone();
    let dead = format!("up{{node=\"{leader}\"}}");
    wait_for("the killed node down and exactly one leader", || {
        let (p, dead) = (p.clone(), dead.clone());
        async move {
            let one = scalar(&p, "sum(rustyraft_role{role=\"leader\"})")? == 1.0;
            let who = scalar(
                &p,
                &format!("rustyraft_role{{role=\"leader\",node=\"{new_leader}\"}}"),
            )?;
            (scalar(&p, &dead)? == 0.0 && one && who == 1.0).then_some(())
        }
    })
    .await;
}
