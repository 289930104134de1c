//! Streaming a manifest snapshot between nodes, disk to disk: the sender reads the bundle
//! ([`crate::chat::bundle`]) from its files on a blocking thread, one wire chunk at a time,
//! into a small bounded channel (HTTP/2 flow control and that channel pace the reads); the
//! receiver writes each chunk to its files on a blocking thread as it arrives. Neither side
//! holds more than a few chunks in memory, whatever the size of the history.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Status, Streaming};

use super::SNAPSHOT_CHUNK_BYTES;
use crate::chat::bundle::{BundleReader, BundleWriter};
use crate::chat::disk::ChatDir;
use crate::chat::ChatError;
use crate::pb;

/// Wire chunks read ahead of the network on each side.
const READ_AHEAD: usize = 4;

/// The deadline of a streamed transfer: two minutes, plus one second per 10 MB, so a large
/// history is never cut off by a fixed deadline but a stuck transfer still ends.
pub(super) fn bundle_timeout(total: u64) -> Duration {
    Duration::from_secs(120 + total / 10_000_000)
}

/// The wire chunks of a bundle, read from disk on a blocking thread as the call consumes them.
/// A read error ends the stream before `done`, which fails the call on both sides.
pub(super) fn stream_bundle(
    header: pb::PeerHeader,
    meta: pb::SnapshotMeta,
    mut reader: BundleReader,
) -> ReceiverStream<pb::InstallSnapshotChunk> {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let total = reader.total_len();
    tokio::task::spawn_blocking(move || {
        let mut offset = 0u64;
        loop {
            let piece = match reader.next_piece(SNAPSHOT_CHUNK_BYTES) {
                Ok(Some(p)) => p,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the snapshot to send failed");
                    return;
                }
            };
            let first = offset == 0;
            let len = piece.len() as u64;
            let chunk = pb::InstallSnapshotChunk {
                header: Some(header.clone()),
                meta: first.then(|| meta.clone()),
                offset,
                data: piece,
                done: offset + len == total,
                total_size: if first { total } else { 0 },
            };
            offset += len;
            // The call ended (failed or was dropped): stop reading.
            if tx.blocking_send(chunk).is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Receives a bundle whose first chunk is `first` into the chat directory `dir`, and returns
/// the manifest to step into the core (pointing at the new generation).
pub(super) async fn receive_bundle(
    first: pb::InstallSnapshotChunk,
    stream: &mut Streaming<pb::InstallSnapshotChunk>,
    dir: ChatDir,
    max_manifest: u64,
) -> Result<Bytes, Status> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(READ_AHEAD);
    let writer = tokio::task::spawn_blocking(move || {
        let mut w = BundleWriter::new(dir, max_manifest);
        while let Some(data) = rx.blocking_recv() {
            w.write(&data)?;
        }
        w.finish()
    });
    let total = first.total_size;
    let mut received = 0u64;
    let mut chunk = Some(first);
    let fed = loop {
        let c = match chunk.take() {
            Some(c) => c,
            None => match stream.next().await {
                Some(Ok(c)) => c,
                Some(Err(e)) => break Err(e),
                None => {
                    break Err(Status::invalid_argument(
                        "snapshot stream ended before done",
                    ))
                }
            },
        };
        if c.offset != received {
            break Err(Status::invalid_argument(format!(
                "snapshot chunk at offset {} but {received} bytes received",
                c.offset
            )));
        }
        received += c.data.len() as u64;
        if received > total {
            break Err(Status::invalid_argument("snapshot larger than announced"));
        }
        let done = c.done;
        // The writer stopped: its error is reported below.
        if tx.send(c.data).await.is_err() {
            break Ok(());
        }
        if done {
            break if received == total {
                Ok(())
            } else {
                Err(Status::invalid_argument("snapshot shorter than announced"))
            };
        }
    };
    drop(tx);
    let written = writer
        .await
        .map_err(|e| Status::internal(format!("snapshot writer: {e}")))?;
    fed?;
    written.map_err(|e| match e {
        ChatError::InvalidArgument(m) => Status::resource_exhausted(m),
        ChatError::Io(m) => Status::unavailable(format!("cannot store the snapshot: {m}")),
        other => Status::invalid_argument(other.to_string()),
    })
}
