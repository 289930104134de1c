//! `raft_client backup` and `raft_client restore`: flags, and the calls into
//! [`rustyraft::node::backup`].

use std::path::PathBuf;

use rustyraft::client::Client;
use rustyraft::node::backup::{self, BackupError, RestoreConfig};
use rustyraft::raft::{default_peer_addr, ConfState};

use super::fail2;
use super::run::{parse_members, Members};

/// `raft_client backup`.
#[derive(clap::Args, Debug)]
pub(super) struct BackupArgs {
    /// Node addresses, comma-separated; the first that answers serves the backup.
    #[arg(long)]
    addr: String,
    /// The backup file to write (through `FILE.tmp`, renamed once whole and checked).
    #[arg(long)]
    out: PathBuf,
}

/// `raft_client restore`.
#[derive(clap::Args, Debug)]
pub(super) struct RestoreArgs {
    /// The backup file (`raft_client backup --out`).
    file: PathBuf,
    /// The new node's data directory; must not exist or be empty.
    #[arg(long)]
    data_dir: PathBuf,
    /// The new node's id; it must be one of --peers.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    id: u64,
    /// Every member of the new cluster, this node included, as for `run`: `id=host:port`
    /// or `id=host:port@host:peerport`, comma-separated.
    #[arg(long, value_parser = parse_members)]
    peers: Members,
    /// The new cluster's id. Default: `<old id>-restored-<backup checksum>`, the same for every
    /// node restored from one file and never the old cluster's.
    #[arg(long)]
    cluster_id: Option<String>,
}

/// Streams a backup from the cluster into `--out`.
pub(super) async fn run_backup(
    a: BackupArgs,
    creds: rustyraft::tls::Credentials,
) -> anyhow::Result<()> {
    let mut c = Client::with_credentials(&a.addr, creds)?;
    let mut stream = c.backup().await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, tonic::Status>>(4);
    let out = a.out.clone();
    // The file is written (and fsynced, and verified) on a blocking thread.
    let writer = tokio::task::spawn_blocking(move || {
        backup::save(&out, std::iter::from_fn(|| rx.blocking_recv()))
    });
    loop {
        let item = match stream.message().await {
            Ok(Some(chunk)) => Ok(chunk.data),
            Ok(None) => break,
            Err(st) => Err(st),
        };
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            break;
        }
    }
    drop(tx);
    let header = writer.await??;
    let size = std::fs::metadata(&a.out).map(|m| m.len()).unwrap_or(0);
    println!(
        "backup of cluster {:?} at index {} (term {}) from node {}: {} ({size} bytes)",
        header.cluster_id,
        header.index,
        header.term,
        header.node_id,
        a.out.display()
    );
    Ok(())
}

/// Seeds `--data-dir` from a backup file. A damaged file or a bad target exits 2.
pub(super) fn run_restore(a: RestoreArgs) -> anyhow::Result<()> {
    let mut conf = ConfState::with_voters(a.peers.client.keys().copied());
    for (id, client) in &a.peers.client {
        let peer = a
            .peers
            .peer
            .get(id)
            .cloned()
            .or_else(|| default_peer_addr(client))
            .unwrap_or_else(|| fail2(format!("node {id}: no peer address for {client:?}")));
        conf.peer_addrs.insert(*id, peer);
    }
    conf.addrs = a.peers.client.clone();
    let cfg = RestoreConfig {
        data_dir: a.data_dir.clone(),
        id: a.id,
        conf,
        cluster_id: a.cluster_id,
    };
    match backup::restore(&a.file, &cfg) {
        Ok(r) => {
            println!(
                "restored node {} of cluster {:?} into {} from the backup of cluster {:?} at \
                 index {} (term {}); start it with `raft_client run {} <addr> <peers> \
                 --data-dir {}`",
                a.id,
                r.cluster_id,
                a.data_dir.display(),
                r.header.cluster_id,
                r.header.index,
                r.header.term,
                a.id,
                a.data_dir.display()
            );
            Ok(())
        }
        Err(e @ (BackupError::Invalid { .. } | BackupError::Refused(_))) => fail2(e),
        Err(e) => Err(e.into()),
    }
}
