//! The ceiling of Subscribe fan-out on this machine with no Raft, no storage and no state
//! machine: how many messages per second the gRPC streaming stack alone (tonic, HTTP/2, TCP on
//! loopback) delivers from one server to N subscribers when server and subscribers share the
//! machine, as they do in `bin/bench_extra fanout`.
//!
//! `cargo run --release --example fanout_ceiling -- --subscribers 10000 --rate 1000 --duration 5`
//!
//! The server implements only `ChatService.Subscribe`: every subscriber gets a receiver of one
//! in-process broadcast channel, and a publisher task broadcasts `--rate` messages per second,
//! each text starting with its send time (as `raft_client bench-fanout` does). The subscribers
//! connect over `--connections` HTTP/2 connections (default one per 100 subscribers). It
//! reports the deliveries per second reached against the deliveries asked for, the latency
//! from publish to arrival, and how many deliveries were dropped because a subscriber lagged
//! more than the channel holds. If this stack cannot reach a rate, the node, which does this
//! plus consensus, cannot either.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use futures_util::stream::{select_all, StreamExt};
use hdrhistogram::Histogram;
use rustyraft::bench::{new_histogram, parse_stamp, stamp_text, unix_ns};
use rustyraft::pb;
use rustyraft::pb::chat_service_client::ChatServiceClient;
use rustyraft::pb::chat_service_server::{ChatService, ChatServiceServer};
use tokio::sync::broadcast;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, TcpListenerStream};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// Messages a subscriber may fall behind before it loses some (counted as dropped).
const CHANNEL: usize = 4096;

/// Command line.
#[derive(Parser, Debug)]
#[command(about = "Subscribe fan-out ceiling of the gRPC stack alone")]
struct Args {
    /// Live subscribers.
    #[arg(long, default_value_t = 10_000)]
    subscribers: usize,
    /// HTTP/2 connections they share (default: one per 100 subscribers).
    #[arg(long)]
    connections: Option<usize>,
    /// Messages per second published.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Measured seconds.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Seconds published but not measured.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Bytes of each message text.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A `ChatService` that only serves `Subscribe`, from one broadcast channel.
struct Broadcaster {
    tx: broadcast::Sender<pb::Message>,
    dropped: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl ChatService for Broadcaster {
    async fn send_message(
        &self,
        _: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        Err(Status::unimplemented("only Subscribe"))
    }

    type SendStreamStream = BoxStream<pb::SendStreamResponse>;

    async fn send_stream(
        &self,
        _: Request<Streaming<pb::SendStreamRequest>>,
    ) -> Result<Response<Self::SendStreamStream>, Status> {
        Err(Status::unimplemented("only Subscribe"))
    }

    async fn get_history(
        &self,
        _: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryResponse>, Status> {
        Err(Status::unimplemented("only Subscribe"))
    }

    type SubscribeStream = BoxStream<pb::Message>;

    async fn subscribe(
        &self,
        _: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let dropped = Arc::clone(&self.dropped);
        let s = BroadcastStream::new(self.tx.subscribe()).filter_map(move |m| {
            let out = match m {
                Ok(m) => Some(Ok(m)),
                Err(BroadcastStreamRecvError::Lagged(n)) => {
                    dropped.fetch_add(n, Ordering::Relaxed);
                    None
                }
            };
            std::future::ready(out)
        });
        Ok(Response::new(Box::pin(s)))
    }

    type ChatStream = BoxStream<pb::ChatEvent>;

    async fn chat(
        &self,
        _: Request<Streaming<pb::ChatRequest>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        Err(Status::unimplemented("only Subscribe"))
    }

    async fn list_rooms(
        &self,
        _: Request<pb::ListRoomsRequest>,
    ) -> Result<Response<pb::ListRoomsResponse>, Status> {
        Err(Status::unimplemented("only Subscribe"))
    }

    async fn create_room(
        &self,
        _: Request<pb::CreateRoomRequest>,
    ) -> Result<Response<pb::CreateRoomResponse>, Status> {
        Err(Status::unimplemented("only Subscribe"))
    }
}

/// Receives on every subscription of one connection until `end_ns`; records the latency of
/// each delivery published at or after `measure_from_ns`.
async fn drain(
    subs: Vec<Streaming<pb::Message>>,
    measure_from_ns: u64,
    end_ns: u64,
) -> (Histogram<u64>, u64) {
    let mut hist = new_histogram();
    let mut delivered = 0u64;
    let mut all = select_all(subs);
    loop {
        let left = end_ns.saturating_sub(unix_ns());
        if left == 0 {
            break;
        }
        match tokio::time::timeout(Duration::from_nanos(left), all.next()).await {
            Ok(Some(Ok(m))) => {
                let Some(sent) = parse_stamp(&m.text) else {
                    continue;
                };
                if sent >= measure_from_ns {
                    delivered += 1;
                    hist.saturating_record(unix_ns().saturating_sub(sent) / 1000);
                }
            }
            Ok(Some(Err(_))) | Ok(None) | Err(_) => break,
        }
    }
    (hist, delivered)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    anyhow::ensure!(a.subscribers > 0, "--subscribers must be positive");
    anyhow::ensure!(a.rate > 0, "--rate must be positive");
    let conns = a
        .connections
        .unwrap_or(a.subscribers.div_ceil(100))
        .clamp(1, a.subscribers);

    let (tx, _) = broadcast::channel(CHANNEL);
    let dropped = Arc::new(AtomicU64::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    let svc = Broadcaster {
        tx: tx.clone(),
        dropped: Arc::clone(&dropped),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(ChatServiceServer::new(svc))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    // Every subscription opens before publishing starts.
    let mut groups: Vec<Vec<Streaming<pb::Message>>> = (0..conns).map(|_| Vec::new()).collect();
    let mut channels = Vec::with_capacity(conns);
    for _ in 0..conns {
        channels.push(
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    for i in 0..a.subscribers {
        let mut c = ChatServiceClient::new(channels[i % conns].clone());
        let s = c
            .subscribe(pb::SubscribeRequest {
                room: "ceiling".into(),
                from_seq: 0,
            })
            .await?
            .into_inner();
        groups[i % conns].push(s);
    }
    // Wait until the server has registered every subscriber.
    while tx.receiver_count() < a.subscribers {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let start = unix_ns();
    let measure_from = start + a.warmup * 1_000_000_000;
    let end = measure_from + a.duration * 1_000_000_000;
    let publisher = {
        let tx = tx.clone();
        let (rate, size) = (a.rate, a.value_size);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut seq = 0u64;
            while unix_ns() < end {
                tick.tick().await;
                seq += 1;
                let m = pb::Message {
                    room: "ceiling".into(),
                    seq,
                    text: stamp_text(unix_ns(), size),
                    author: "publisher".into(),
                    ..Default::default()
                };
                let _ = tx.send(m);
            }
            seq
        })
    };
    let mut drains = tokio::task::JoinSet::new();
    for g in groups {
        drains.spawn(drain(g, measure_from, end + 2_000_000_000));
    }
    let published = publisher.await?;
    let mut hist = new_histogram();
    let mut delivered = 0u64;
    while let Some(r) = drains.join_next().await {
        let (h, d) = r?;
        hist.add(&h)?;
        delivered += d;
    }
    let wanted = a.subscribers as u64 * u64::from(a.rate) * a.duration;
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    println!(
        "fanout ceiling: {} subscribers on {conns} connections, {} msg/s asked ({published} \
         published): {:.0} deliveries/s of {:.0} asked ({:.1} %), latency p50 {:.2} ms p99 {:.2} \
         ms max {:.2} ms, {} dropped (lagged past {CHANNEL})",
        a.subscribers,
        a.rate,
        delivered as f64 / a.duration as f64,
        wanted as f64 / a.duration as f64,
        100.0 * delivered as f64 / wanted.max(1) as f64,
        q(0.5),
        q(0.99),
        hist.max() as f64 / 1000.0,
        dropped.load(Ordering::Relaxed),
    );
    Ok(())
}
