//! The web side of a node (issue 19), from the outside, on real 3-node clusters:
//! - every HTTP/JSON endpoint with a plain HTTP client (HTTP/1.0 over a TCP socket, no client
//!   crate): success and error codes, JSON error bodies, idempotent retries on another node,
//!   paging, client tokens (header and `access_token`), 503 when no quorum is left;
//! - the event stream: a reader on one node, that node killed with SIGKILL, the reader resumed
//!   on another node with `Last-Event-ID`: every message exactly once, in seq order;
//! - the chat page and the cluster view in a real browser (headless Chromium driven by Python
//!   Selenium, `tests/web/browser.py`): two pages chat, the leader is killed while both send,
//!   both pages end with the identical list, the cluster view shows the new leader, and
//!   screenshots are saved.
//!
//! The browser test installs what it needs when missing (Debian `chromium` and
//! `chromium-driver` with apt-get, `selenium` with pip; CI runs as root). If that is impossible
//! it skips with a message, unless `RUSTYRAFT_REQUIRE_BROWSER=1` (set by `.ci/run`), which
//! turns a skip into a failure. Screenshots go to `RUSTYRAFT_WEB_SHOTS` (default: a directory
//! under Cargo's target dir, printed); `RUSTYRAFT_WEB_SHOTS=docs/img` refreshes the README's.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// One HTTP answer: status code, headers (lower-case names) and body.
struct Answer {
    code: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// The gRPC code name of an error body.
    fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// A plain HTTP/1.0 request (the server closes the connection after the answer).
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let has_length = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    if method == "POST" && !has_length {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).to_string();
    let (head, body) = out
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer from {addr}{path}: {out:?}"));
    let mut lines = head.lines();
    let code = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        code,
        headers,
        body: body.to_string(),
    }
}

fn get(addr: &str, path: &str) -> Answer {
    http(addr, "GET", path, &[], b"")
}

fn post(addr: &str, path: &str, body: Value) -> Answer {
    http(addr, "POST", path, &[], body.to_string().as_bytes())
}

/// Sends through the HTTP API and returns the stored message.
fn send(addr: &str, room: &str, text: &str, id: &str) -> Value {
    let a = post(
        addr,
        &format!("/v1/rooms/{room}/messages"),
        json!({"author": "ada", "text": text, "client_request_id": id}),
    );
    assert_eq!(a.code, 200, "send {text:?} to {addr}: {}", a.body);
    a.json()["message"].clone()
}

/// The node's web address for node `id` of a cluster started with HTTP.
fn web(c: &Cluster, id: u64) -> String {
    c.http[&id].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_endpoints_success_and_errors() {
    let mut c = Cluster::start_with_http(3, &[]);
    let leader = c.leader().await;
    let follower = *c.live().iter().find(|&&i| i != leader).unwrap();
    let (l, f) = (web(&c, leader), web(&c, follower));
    wait_for("every node ready", || async {
        c.http
            .values()
            .all(|a| get(a, "/readyz").code == 200)
            .then_some(())
    })
    .await;
    assert_eq!(get(&f, "/healthz").code, 200);

    // Rooms: created once (201), then idempotent (200, created: false); listed on any node.
    let a = post(&f, "/v1/rooms", json!({"room": "lobby"}));
    assert_eq!((a.code, a.json()["created"].clone()), (201, json!(true)));
    let a = post(&l, "/v1/rooms", json!({"room": "lobby"}));
    assert_eq!((a.code, a.json()["created"].clone()), (200, json!(false)));
    let a = post(&f, "/v1/rooms", json!({"room": ""}));
    assert_eq!((a.code, a.error_code().as_str()), (400, "INVALID_ARGUMENT"));
    let a = http(&f, "POST", "/v1/rooms", &[], b"{not json");
    assert_eq!((a.code, a.error_code().as_str()), (400, "INVALID_ARGUMENT"));
    for id in [leader, follower] {
        let rooms = get(&web(&c, id), "/v1/rooms").json();
        assert_eq!(rooms["rooms"][0]["name"], "lobby", "{rooms}");
    }
    let a = get(&f, "/v1/rooms?page_token=garbage");
    assert_eq!((a.code, a.error_code().as_str()), (400, "INVALID_ARGUMENT"));

    // Sends: through a follower (forwarded), idempotent on a retry at another node.
    let id = "3a9f2f5e-1111-4222-8333-444455556666";
    let m1 = send(&f, "lobby", "hello", id);
    assert_eq!(
        (m1["seq"].clone(), m1["author"].clone()),
        (json!(1), json!("ada"))
    );
    let again = send(&l, "lobby", "hello", id);
    assert_eq!(again, m1, "a retry returns the original message");
    for i in 2..=5 {
        send(
            &f,
            "lobby",
            &format!("m{i}"),
            &uuid::Uuid::new_v4().to_string(),
        );
    }
    let bad = [
        (json!({"author": "", "text": "x"}), 400, "INVALID_ARGUMENT"),
        (
            json!({"author": "ada", "text": ""}),
            400,
            "INVALID_ARGUMENT",
        ),
        (json!({"author": "ada"}), 400, "INVALID_ARGUMENT"),
        (
            json!({"author": "ada", "text": "x".repeat(70_000)}),
            400,
            "INVALID_ARGUMENT",
        ),
    ];
    for (body, code, name) in bad {
        let a = post(&f, "/v1/rooms/lobby/messages", body.clone());
        assert_eq!((a.code, a.error_code().as_str()), (code, name), "{body}");
    }
    // Refused on its Content-Length alone, before any of the body is read.
    let len = (9 << 20).to_string();
    let a = http(
        &f,
        "POST",
        "/v1/rooms/lobby/messages",
        &[("Content-Length", &len)],
        b"",
    );
    assert_eq!(a.code, 413, "{}", a.body);

    // History: linearizable by default on a follower, paged both ways, every error precise.
    let page = get(&f, "/v1/rooms/lobby/messages?limit=2").json();
    let seqs = |v: &Value| -> Vec<u64> {
        v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(seqs(&page), [1, 2]);
    let token = page["next_page_token"].as_str().unwrap().to_string();
    let page2 = get(
        &f,
        &format!("/v1/rooms/lobby/messages?limit=2&page_token={token}"),
    )
    .json();
    assert_eq!(seqs(&page2), [3, 4]);
    let back = get(&l, "/v1/rooms/lobby/messages?reverse=true&limit=3").json();
    assert_eq!(seqs(&back), [5, 4, 3]);
    let seq_read = get(
        &f,
        &format!(
            "/v1/rooms/lobby/messages?consistency=sequential&min_index={}",
            m1["index"]
        ),
    )
    .json();
    assert!(seqs(&seq_read).starts_with(&[1]));
    let errors = [
        ("/v1/rooms/nope/messages", 404, "NOT_FOUND"),
        (
            "/v1/rooms/lobby/messages?consistency=eventual",
            400,
            "INVALID_ARGUMENT",
        ),
        ("/v1/rooms/lobby/messages?limit=-1", 400, "INVALID_ARGUMENT"),
        (
            "/v1/rooms/lobby/messages?page_token=v1.x",
            400,
            "INVALID_ARGUMENT",
        ),
        ("/v1/nothing-here", 404, "NOT_FOUND"),
    ];
    for (path, code, name) in errors {
        let a = get(&f, path);
        assert_eq!((a.code, a.error_code().as_str()), (code, name), "{path}");
    }
    let a = http(&f, "DELETE", "/v1/rooms", &[], b"");
    assert_eq!((a.code, a.error_code().as_str()), (405, "UNIMPLEMENTED"));
    let a = http(
        &f,
        "GET",
        "/v1/rooms/lobby/events",
        &[("Last-Event-ID", "x")],
        b"",
    );
    assert_eq!((a.code, a.error_code().as_str()), (400, "INVALID_ARGUMENT"));

    // The cluster status: every member, its role and its web address.
    let st = get(&f, "/v1/cluster/status").json();
    assert_eq!(st["node"]["id"], follower);
    let members = st["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{st}");
    for m in members {
        let id = m["id"].as_u64().unwrap();
        assert_eq!(m["status"]["http_addr"], web(&c, id), "{m}");
        assert_eq!(m["status"]["leader_id"], leader, "{m}");
    }
    let roles: Vec<&str> = members
        .iter()
        .map(|m| m["status"]["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "leader").count(),
        1,
        "{roles:?}"
    );

    // CORS: another node's page may call this one (failover), without cookies.
    let a = http(
        &f,
        "OPTIONS",
        "/v1/rooms/lobby/messages",
        &[
            ("Origin", "http://elsewhere:1"),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization,content-type",
            ),
        ],
        b"",
    );
    assert_eq!(
        a.headers
            .get("access-control-allow-origin")
            .map(String::as_str),
        Some("*")
    );

    // No quorum left: a send answers 503 UNAVAILABLE with a reason, once the server's own
    // retries (through elections) give up.
    let others: Vec<u64> = c.live().into_iter().filter(|&i| i != follower).collect();
    for id in others {
        c.kill9(id);
    }
    let a = post(
        &f,
        "/v1/rooms/lobby/messages",
        json!({"author": "ada", "text": "into the void"}),
    );
    assert_eq!(
        (a.code, a.error_code().as_str()),
        (503, "UNAVAILABLE"),
        "{}",
        a.body
    );
    assert!(a.json()["error"]["reason"].is_string(), "{}", a.body);
    assert_eq!(a.headers.get("retry-after").map(String::as_str), Some("1"));
    let a = get(&f, "/readyz");
    assert_eq!(a.code, 503, "{}", a.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_with_client_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    let token = |user: &str| {
        let out = Command::new(bin())
            .args(["token", "add", "--file"])
            .arg(&file)
            .args(["--user", user])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let ada = token("ada");
    let file_arg = file.display().to_string();
    let c = Cluster::start_with_http(3, &["--client-tokens", &file_arg]);
    let bearer = format!("Bearer {ada}");
    let auth = [("Authorization", bearer.as_str())];
    // The harness's leader wait has no token: ask the web API, with one.
    let leader = wait_for("a leader, seen over HTTP with a token", || async {
        let mut leaders = Vec::new();
        for a in c.http.values() {
            let s = TcpStream::connect(a)
                .ok()
                .map(|_| http(a, "GET", "/v1/cluster/status", &auth, b""))?;
            leaders.push(s.json()["node"]["leader_id"].as_u64().filter(|&l| l != 0)?);
        }
        leaders.windows(2).all(|w| w[0] == w[1]).then(|| leaders[0])
    })
    .await;
    let follower = *c.live().iter().find(|&&i| i != leader).unwrap();
    let f = web(&c, follower);

    let a = get(&f, "/v1/rooms");
    assert_eq!((a.code, a.error_code().as_str()), (401, "UNAUTHENTICATED"));
    assert_eq!(
        a.headers.get("www-authenticate").map(String::as_str),
        Some("Bearer")
    );
    let a = http(
        &f,
        "GET",
        "/v1/rooms",
        &[("Authorization", "Bearer nope")],
        b"",
    );
    assert_eq!(a.code, 401);
    assert_eq!(http(&f, "GET", "/v1/rooms", &auth, b"").code, 200);
    // Sends are forwarded to the leader with the caller's token; the author is the user.
    let body = json!({"text": "signed", "client_request_id": uuid::Uuid::new_v4().to_string()});
    let a = http(
        &f,
        "POST",
        "/v1/rooms/sec/messages",
        &auth,
        body.to_string().as_bytes(),
    );
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(a.json()["message"]["author"], "ada");
    let body = json!({"author": "bob", "text": "forged"});
    let a = http(
        &f,
        "POST",
        "/v1/rooms/sec/messages",
        &auth,
        body.to_string().as_bytes(),
    );
    assert_eq!(
        (a.code, a.error_code().as_str()),
        (403, "PERMISSION_DENIED")
    );
    let a = get(&f, "/v1/cluster/status");
    assert_eq!(a.code, 401);
    let st = http(&f, "GET", "/v1/cluster/status", &auth, b"").json();
    let reachable = st["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["status"].is_object())
        .count();
    assert_eq!(
        reachable, 3,
        "members are asked with the caller's token: {st}"
    );
    // EventSource cannot set headers: the token may come as `access_token`.
    let events = SseReader::open(&f, "/v1/rooms/sec/events", None);
    assert_eq!(events.status, 401);
    let events = SseReader::open(
        &f,
        &format!("/v1/rooms/sec/events?access_token={ada}"),
        None,
    );
    assert_eq!(events.status, 200);
    events.wait_for_seqs(&[1]).await;
    // The pages need no token.
    assert_eq!(get(&f, "/").code, 200);
    assert_eq!(get(&f, "/cluster").code, 200);
}

/// An SSE reader on its own thread: the events (seq, message) it has received so far.
struct SseReader {
    status: u16,
    events: Arc<Mutex<Vec<(u64, Value)>>>,
}

impl SseReader {
    fn open(addr: &str, path: &str, last_event_id: Option<u64>) -> SseReader {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut req =
            format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        if let Some(id) = last_event_id {
            req.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                break;
            }
        }
        let events = Arc::new(Mutex::new(Vec::new()));
        let out = events.clone();
        std::thread::spawn(move || {
            let (mut id, mut data) = (None::<u64>, String::new());
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let l = line.trim_end_matches(['\r', '\n']);
                if let Some(v) = l.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = l.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                } else if l.is_empty() {
                    if let (Some(seq), Ok(v)) = (id.take(), serde_json::from_str(&data)) {
                        out.lock().unwrap().push((seq, v));
                    }
                    data.clear();
                }
            }
        });
        SseReader { status, events }
    }

    fn seqs(&self) -> Vec<u64> {
        self.events.lock().unwrap().iter().map(|e| e.0).collect()
    }

    async fn wait_for_seqs(&self, want: &[u64]) {
        wait_for(&format!("events {want:?}"), || async {
            (self.seqs() == want).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resumes_with_last_event_id_on_another_node_after_a_kill() {
    let mut c = Cluster::start_with_http(3, &[]);
    let leader = c.leader().await;
    let follower = *c.live().iter().find(|&&i| i != leader).unwrap();
    let other = *c
        .live()
        .iter()
        .find(|&&i| i != leader && i != follower)
        .unwrap();
    // The stream is served by a follower, which is then killed: the reader resumes on the
    // third node with the last id it saw.
    let first = SseReader::open(&web(&c, follower), "/v1/rooms/feed/events", None);
    assert_eq!(first.status, 200);
    let l = web(&c, leader);
    let mut sent = Vec::new();
    for i in 1..=10 {
        let m = send(
            &l,
            "feed",
            &format!("t{i}"),
            &uuid::Uuid::new_v4().to_string(),
        );
        sent.push(m);
    }
    first.wait_for_seqs(&(1..=10).collect::<Vec<_>>()).await;
    c.kill9(follower);
    for i in 11..=15 {
        sent.push(send(
            &l,
            "feed",
            &format!("t{i}"),
            &uuid::Uuid::new_v4().to_string(),
        ));
    }
    let last = *first.seqs().last().unwrap();
    assert_eq!(
        last, 10,
        "the killed node's stream delivered nothing it could not have"
    );
    let resumed = SseReader::open(&web(&c, other), "/v1/rooms/feed/events", Some(last));
    assert_eq!(resumed.status, 200);
    for i in 16..=20 {
        sent.push(send(
            &l,
            "feed",
            &format!("t{i}"),
            &uuid::Uuid::new_v4().to_string(),
        ));
    }
    resumed.wait_for_seqs(&(11..=20).collect::<Vec<_>>()).await;
    let mut got = first.events.lock().unwrap().clone();
    got.extend(resumed.events.lock().unwrap().iter().cloned());
    let got: Vec<Value> = got.into_iter().map(|(_, m)| m).collect();
    assert_eq!(
        got, sent,
        "every message exactly once, in seq order, as acknowledged"
    );
    // `from_seq` starts a fresh stream anywhere in the room.
    let tail = SseReader::open(&l, "/v1/rooms/feed/events?from_seq=18", None);
    tail.wait_for_seqs(&[18, 19, 20]).await;
}

/// Whether the browser test's tools are here; installs them when missing (as root).
fn ensure_browser() -> Result<(), String> {
    let have_driver = || Path::new("/usr/bin/chromedriver").exists();
    if !have_driver() {
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "chromium", "chromium-driver"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success())
        };
        if !install() {
            // A fresh machine may have no package lists yet.
            let _ = Command::new("apt-get").arg("update").status();
            install();
        }
        if !have_driver() {
            return Err("apt-get install -y chromium chromium-driver failed".into());
        }
    }
    let have_selenium = || {
        Command::new("python3")
            .args(["-c", "import selenium"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !have_selenium() {
        let pip = |extra: &[&str]| {
            Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "selenium"])
                .args(extra)
                .status()
                .is_ok_and(|s| s.success())
        };
        // Debian's own python refuses system-wide pip installs (PEP 668) unless told.
        if !pip(&[]) && !pip(&["--user"]) {
            pip(&["--break-system-packages"]);
        }
        if !have_selenium() {
            return Err("python3 -m pip install selenium failed".into());
        }
    }
    Ok(())
}

/// Whether the browser tests can run: installs what is missing; a skip is a failure under
/// `RUSTYRAFT_REQUIRE_BROWSER` (CI).
fn browser_ready(test: &str) -> bool {
    if let Err(why) = ensure_browser() {
        assert!(
            std::env::var("RUSTYRAFT_REQUIRE_BROWSER").is_err(),
            "RUSTYRAFT_REQUIRE_BROWSER is set but the browser test cannot run: {why}"
        );
        eprintln!("SKIPPED {test}: {why}");
        return false;
    }
    true
}

fn browser_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web/browser.py")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_page_asks_for_and_uses_a_client_token() {
    if !browser_ready("browser_page_asks_for_and_uses_a_client_token") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    let out = Command::new(bin())
        .args(["token", "add", "--file"])
        .arg(&file)
        .args(["--user", "grace"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let c = Cluster::start_with_http(1, &["--client-tokens", &file.display().to_string()]);
    let url = format!("http://{}", web(&c, 1));
    let out = tokio::task::block_in_place(|| {
        Command::new("python3")
            .arg(browser_script())
            .args(["--leader-url", &url, "--room", "private"])
            .args(["--token", &token, "--token-user", "grace"])
            .output()
            .unwrap()
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the token page test failed:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_chat_fails_over_when_the_leader_is_killed() {
    if !browser_ready("browser_chat_fails_over_when_the_leader_is_killed") {
        return;
    }
    let shots = std::env::var("RUSTYRAFT_WEB_SHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-shots"));
    let mut c = Cluster::start_with_http(3, &[]);
    let leader = c.leader().await;
    let follower = *c.live().iter().find(|&&i| i != leader).unwrap();
    let pid = c.nodes[&leader].child.as_ref().unwrap().id();
    // A room with more than a page of history, for the scroll-back check.
    let history = 120;
    for i in 1..=history {
        send(
            &web(&c, leader),
            "history",
            &format!("old {i}"),
            &uuid::Uuid::new_v4().to_string(),
        );
    }
    let script = browser_script();
    let c_ref = &c;
    let out = tokio::task::block_in_place(|| {
        Command::new("python3")
            .arg(&script)
            .args(["--leader-url", &format!("http://{}", web(c_ref, leader))])
            .args([
                "--follower-url",
                &format!("http://{}", web(c_ref, follower)),
            ])
            .args(["--leader-id", &leader.to_string()])
            .args(["--leader-pid", &pid.to_string()])
            .args(["--room", "browser"])
            .args(["--history-size", &history.to_string()])
            .arg("--shots")
            .arg(&shots)
            .output()
            .unwrap()
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(out.status.success(), "the browser test failed:\n{stderr}");
    c.kill9(leader); // already dead (SIGKILL from the script); reaps it
    let result: Value = serde_json::from_slice(&out.stdout).expect("the script's JSON result");
    // What the pages show is what the surviving nodes store, on each of them.
    let shown: Vec<(u64, String)> = result["a"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m[0].as_u64().unwrap(), m[2].as_str().unwrap().to_string()))
        .collect();
    for id in c.live() {
        let h = get(&web(&c, id), "/v1/rooms/browser/messages?limit=1000").json();
        let stored: Vec<(u64, String)> = h["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["seq"].as_u64().unwrap(),
                    m["text"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(stored, shown, "node {id} stores what the pages show");
    }
    assert_ne!(result["new_leader"], leader);
    for f in ["web-chat.png", "web-cluster.png"] {
        let p = shots.join(f);
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(len > 10_000, "screenshot {p:?} missing or empty");
    }
    eprintln!("screenshots in {}", shots.display());
}
