//! Node log forwarding: each child's stdout and stderr, line by line, to the launcher's stdout
//! (prefixed with the node id) or to a per-node file, keeping the last line for error reports.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Child;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::NodeId;

/// Where the children's log lines go.
#[derive(Clone, Debug)]
pub enum LogSink {
    /// Our stdout, each line prefixed with the node id (colored on a terminal).
    Prefixed,
    /// `<data_dir>/node-<id>.log`, appended across restarts (chaos runs keep stdout readable).
    Files,
}

/// One run of a node's output: the last line it logged, and the tasks forwarding it.
pub(super) struct Forwarding {
    /// The last line either stream carried (empty if none yet).
    pub(super) last_line: Arc<Mutex<String>>,
    /// The forwarding tasks; they end when the child's streams close.
    pub(super) tasks: Vec<JoinHandle<()>>,
}

/// Starts forwarding `child`'s stdout and stderr for node `id` as `logs` says, on `tasks`;
/// the forwarders stop once `stop` is cancelled and nothing more is ready to read.
pub(super) fn forward(
    child: &mut Child,
    id: NodeId,
    logs: &LogSink,
    data_dir: &Path,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> Forwarding {
    let sink = match logs {
        LogSink::Prefixed => Sink::Stdout(prefix(id)),
        LogSink::Files => Sink::File(data_dir.join(format!("node-{id}.log"))),
    };
    let last_line = Arc::new(Mutex::new(String::new()));
    let mut handles = Vec::new();
    if let Some(out) = child.stdout.take() {
        let f = forward_lines(out, sink.clone(), last_line.clone(), stop.clone());
        handles.push(tasks.spawn(f));
    }
    if let Some(err) = child.stderr.take() {
        let f = forward_lines(err, sink, last_line.clone(), stop.clone());
        handles.push(tasks.spawn(f));
    }
    Forwarding {
        last_line,
        tasks: handles,
    }
}

#[derive(Clone)]
enum Sink {
    Stdout(String),
    File(PathBuf),
}

fn prefix(id: NodeId) -> String {
    if std::io::stdout().is_terminal() {
        // Six distinguishable ANSI colors, cycling.
        let color = 31 + (id as usize - 1) % 6;
        format!("\x1b[{color}mn{id} |\x1b[0m ")
    } else {
        format!("n{id} | ")
    }
}

/// Longest log line forwarded; longer lines are cut (bounded memory per child).
const MAX_LINE: usize = 8 * 1024;

/// Forwards a child's output, line by line, to `sink`, keeping the last line in `last`.
/// Ends at the end of the stream (the child exited), or once `stop` is cancelled and nothing
/// more is ready to read (so a dead child's last lines are still forwarded).
async fn forward_lines(
    r: impl tokio::io::AsyncRead + Unpin,
    sink: Sink,
    last: Arc<Mutex<String>>,
    stop: CancellationToken,
) {
    let mut lines = BufReader::new(r);
    let mut file = match &sink {
        Sink::File(p) => open_append(p).await,
        Sink::Stdout(_) => None,
    };
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let mut limited = (&mut lines).take(MAX_LINE as u64);
        let read = tokio::select! {
            biased;
            r = limited.read_until(b'\n', &mut buf) => r,
            _ = stop.cancelled() => return,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if buf.last() != Some(&b'\n') {
            buf.push(b'\n');
        }
        {
            let mut l = last.lock().unwrap_or_else(|e| e.into_inner());
            l.clear();
            l.push_str(String::from_utf8_lossy(&buf).trim_end());
        }
        match &sink {
            Sink::Stdout(p) => {
                let line = String::from_utf8_lossy(&buf);
                print!("{p}{line}");
            }
            Sink::File(_) => {
                if let Some(f) = file.as_mut() {
                    let _ = f.write_all(&buf).await;
                }
            }
        }
    }
}

async fn open_append(p: &Path) -> Option<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .await
        .ok()
}
