//! A fault-injecting TCP proxy for one direction of one peer link.
//!
//! `run_n_clients` puts one [`LinkProxy`] in front of every ordered pair of nodes: node A is
//! told that peer B lives at the proxy's address, so everything A sends to B (and B's replies
//! on those connections) crosses it. Switching a link's [`LinkMode`] then partitions, delays or
//! heals the cluster with no hooks inside the node.
//!
//! Modes, and why each behaves as it does:
//! - [`LinkMode::Pass`]: bytes flow untouched.
//! - [`LinkMode::Blackhole`]: open connections are cut and new ones are accepted but never
//!   forwarded, like a cable pulled out mid-flight: the sender sees timeouts, not refusals,
//!   which is what a real partition looks like. Cutting (rather than pausing) existing
//!   connections keeps HTTP/2 streams whole: no frame is ever half-delivered.
//! - [`LinkMode::Refuse`]: connections are cut and new ones are closed at once, like a crashed
//!   host whose port answers with a reset.
//! - [`LinkMode::Delay`]: every chunk is held for the given time, in order.
//!
//! Tasks: a proxy's accept loop and one task per connection run on the [`TaskTracker`] its
//! owner passes to [`LinkProxy::start`], and stop when the owner's [`CancellationToken`] is
//! cancelled or the proxy is dropped; the owner then awaits them through its tracker.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

/// How a link treats traffic right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkMode {
    /// Forward everything.
    Pass,
    /// Cut open connections; accept new ones but forward nothing.
    Blackhole,
    /// Cut open connections and close new ones at once.
    Refuse,
    /// Forward everything after this delay.
    Delay(Duration),
}

/// Chunks a delayed direction may hold before it stops reading (and TCP pushes back on the
/// sender): a bound on memory, not on correctness.
const DELAY_QUEUE: usize = 256;
/// Read buffer per direction.
const CHUNK: usize = 16 * 1024;

/// One proxied link: listens on its own port and forwards to `target`.
pub struct LinkProxy {
    addr: SocketAddr,
    mode: watch::Sender<LinkMode>,
    /// Cancels this proxy's tasks (accept loop and connections) when the proxy is dropped.
    _stop: DropGuard,
}

impl LinkProxy {
    /// Starts a proxy on `listen` (use port 0 for any free port) in front of `target`. Its
    /// tasks are spawned on `tasks` and end when `stop` is cancelled or the proxy is dropped,
    /// so the owner can await every one of them.
    pub async fn start(
        listen: SocketAddr,
        target: SocketAddr,
        tasks: &TaskTracker,
        stop: &CancellationToken,
    ) -> std::io::Result<LinkProxy> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (mode, rx) = watch::channel(LinkMode::Pass);
        let stop = stop.child_token();
        tasks.spawn(accept_loop(
            listener,
            target,
            rx,
            tasks.clone(),
            stop.clone(),
        ));
        Ok(LinkProxy {
            addr,
            mode,
            _stop: stop.drop_guard(),
        })
    }

    /// Where nodes should connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The current mode.
    pub fn mode(&self) -> LinkMode {
        *self.mode.borrow()
    }

    /// Changes the mode; open connections react at once.
    pub fn set_mode(&self, mode: LinkMode) {
        self.mode.send_replace(mode);
    }
}

/// Accepts connections until `stop`; each one is served by its own task on `tasks`.
async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    mode: watch::Receiver<LinkMode>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((inbound, _)) = accepted else {
            continue;
        };
        let _ = inbound.set_nodelay(true);
        let (mode, stop) = (mode.clone(), stop.clone());
        tasks.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = serve(inbound, target, mode) => {}
            }
        });
    }
}

/// One accepted connection, treated as the link's mode says when it arrives.
async fn serve(inbound: TcpStream, target: SocketAddr, mode: watch::Receiver<LinkMode>) {
    let current = *mode.borrow();
    match current {
        LinkMode::Refuse => drop(inbound),
        LinkMode::Blackhole => hold_until_cut(inbound, mode).await,
        LinkMode::Pass | LinkMode::Delay(_) => {
            let Ok(outbound) = TcpStream::connect(target).await else {
                return; // the node behind is down: close, like it would
            };
            let _ = outbound.set_nodelay(true);
            splice(inbound, outbound, mode).await;
        }
    }
}

/// A blackholed connection: read and discard until the mode changes, then close (the client
/// reconnects through a fresh, healed connection).
async fn hold_until_cut(mut inbound: TcpStream, mut mode: watch::Receiver<LinkMode>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        tokio::select! {
            r = inbound.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            changed = mode.changed() => {
                if changed.is_err() || *mode.borrow() != LinkMode::Blackhole {
                    return;
                }
            }
        }
    }
}

/// Forwards both directions until either side closes or the link is cut.
async fn splice(inbound: TcpStream, outbound: TcpStream, mode: watch::Receiver<LinkMode>) {
    let (ir, iw) = inbound.into_split();
    let (or, ow) = outbound.into_split();
    let up = pump(ir, ow, mode.clone());
    let down = pump(or, iw, mode);
    // When one direction ends, the other goes too: dropping both halves closes the sockets.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// Copies one direction, honouring the mode: returns when the connection must close.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<LinkMode>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(DELAY_QUEUE);
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            tokio::select! {
                r = from.read(&mut buf) => {
                    let n = match r {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let delay = match *mode.borrow() {
                        LinkMode::Pass => Duration::ZERO,
                        LinkMode::Delay(d) => d,
                        LinkMode::Blackhole | LinkMode::Refuse => return,
                    };
                    if tx.send((Instant::now() + delay, buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
                changed = mode.changed() => {
                    let cut = changed.is_err()
                        || matches!(*mode.borrow(), LinkMode::Blackhole | LinkMode::Refuse);
                    if cut {
                        return;
                    }
                }
            }
        }
    };
    // The reader ending (close or cut) drops `tx`; the writer then drains what is queued,
    // unless the link was cut, in which case the caller drops everything.
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free port.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn proxy(target: SocketAddr, tasks: &TaskTracker, stop: &CancellationToken) -> LinkProxy {
        LinkProxy::start("127.0.0.1:0".parse().expect("addr"), target, tasks, stop)
            .await
            .expect("proxy")
    }

    async fn roundtrip(addr: SocketAddr, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(msg).await?;
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf).await?;
        Ok(buf)
    }

    #[tokio::test]
    async fn pass_forwards_both_ways() {
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        let p = proxy(echo().await, &tasks, &stop).await;
        assert_eq!(roundtrip(p.addr(), b"hello").await.expect("echo"), b"hello");
    }

    #[tokio::test(start_paused = true)]
    async fn blackhole_swallows_and_heal_restores() {
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        let p = proxy(echo().await, &tasks, &stop).await;
        p.set_mode(LinkMode::Blackhole);
        let r = tokio::time::timeout(Duration::from_secs(5), roundtrip(p.addr(), b"x")).await;
        assert!(r.is_err(), "a blackholed link must not answer: {r:?}");
        p.set_mode(LinkMode::Pass);
        assert_eq!(roundtrip(p.addr(), b"back").await.expect("healed"), b"back");
    }

    #[tokio::test]
    async fn refuse_closes_and_cuts_open_connections() {
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        let p = proxy(echo().await, &tasks, &stop).await;
        let mut open = TcpStream::connect(p.addr()).await.expect("connect");
        open.write_all(b"a").await.expect("write");
        let mut one = [0u8; 1];
        open.read_exact(&mut one)
            .await
            .expect("echo before the cut");
        p.set_mode(LinkMode::Refuse);
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), open.read_to_end(&mut rest))
            .await
            .expect("the cut connection closes promptly");
        assert!(n.map_or(true, |n| n == 0), "nothing more arrives");
        assert!(
            roundtrip(p.addr(), b"b").await.is_err(),
            "new connections fail"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn delay_holds_traffic_in_order() {
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        let p = proxy(echo().await, &tasks, &stop).await;
        p.set_mode(LinkMode::Delay(Duration::from_millis(300)));
        let start = Instant::now();
        assert_eq!(roundtrip(p.addr(), b"slow").await.expect("echo"), b"slow");
        // Both directions are delayed: at least 600 ms of (virtual) time passed.
        assert!(
            start.elapsed() >= Duration::from_millis(600),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn cancelling_ends_every_task_and_open_connection() {
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        let p = proxy(echo().await, &tasks, &stop).await;
        let mut open = TcpStream::connect(p.addr()).await.expect("connect");
        open.write_all(b"a").await.expect("write");
        let mut one = [0u8; 1];
        open.read_exact(&mut one).await.expect("echo");
        // The accept loop and the open connection's task.
        assert_eq!(tasks.len(), 2);
        stop.cancel();
        tasks.close();
        tokio::time::timeout(Duration::from_secs(5), tasks.wait())
            .await
            .expect("every proxy task ends once cancelled");
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), open.read_to_end(&mut rest))
            .await
            .expect("the open connection is closed");
        assert!(n.map_or(true, |n| n == 0), "nothing more arrives");
    }

    #[tokio::test]
    async fn dropping_a_proxy_ends_its_tasks() {
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        let p = proxy(echo().await, &tasks, &stop).await;
        assert_eq!(roundtrip(p.addr(), b"x").await.expect("echo"), b"x");
        drop(p);
        tasks.close();
        tokio::time::timeout(Duration::from_secs(5), tasks.wait())
            .await
            .expect("a dropped proxy leaves no task behind");
        assert!(!stop.is_cancelled(), "the owner's token is not touched");
    }
}
