//! WAL append throughput with group commit: entries/s and fsyncs/s for fixed-size entries at
//! several batch sizes (one `sync` per batch, as a driver does per Ready).
//!
//! `cargo run --release --example wal_bench -- --rounds 1000 --size 100 --batches 1,16,256`
//!
//! It writes into a temp directory under `--dir` (default: the current directory), so run it
//! on the disk you care about; a tmpfs makes fsync free and the figures meaningless.

use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use clap::Parser;
use rustyraft::raft::{ConfState, Entry, EntryKind, LogStore};
use rustyraft::storage::{DiskConfig, DiskStorage};

/// Command line.
#[derive(Parser, Debug)]
#[command(about = "WAL append throughput with group commit")]
struct Args {
    /// Directory in which a temp directory is created for the logs.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Batches (and so syncs) per batch size.
    #[arg(long, default_value_t = 1000)]
    rounds: u64,
    /// Entry payload size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    batches: Vec<u64>,
    /// Skip fsync, to see what the encoding and write path cost without the disk.
    #[arg(long)]
    no_fsync: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp = tempfile::Builder::new()
        .prefix("wal_bench")
        .tempdir_in(&args.dir)?;
    println!(
        "dir {}  entry {} B  {} syncs per batch size",
        tmp.path().display(),
        args.size,
        args.rounds
    );
    println!(
        "{:>6} {:>10} {:>8} {:>12} {:>10} {:>8}",
        "batch", "entries", "secs", "entries/s", "fsyncs/s", "MB/s"
    );
    let payload = Bytes::from(vec![0x5Au8; args.size]);
    let mut rates = Vec::new();
    for &batch in &args.batches {
        let dir = tmp.path().join(format!("b{batch}"));
        let mut cfg = DiskConfig::new(&dir);
        cfg.fsync = !args.no_fsync;
        let mut s = DiskStorage::open(cfg, ConfState::with_voters([1]))?;
        let before = s.stats();
        let mut index = 1;
        let start = Instant::now();
        for _ in 0..args.rounds {
            let entries: Vec<Entry> = (0..batch)
                .map(|i| Entry {
                    index: index + i,
                    term: 1,
                    kind: EntryKind::Normal,
                    data: payload.clone(),
                })
                .collect();
            index += batch;
            s.append(&entries)?;
            s.sync()?;
        }
        let secs = start.elapsed().as_secs_f64();
        let after = s.stats();
        let n = args.rounds * batch;
        let rate = n as f64 / secs;
        rates.push((batch, rate));
        println!(
            "{:>6} {:>10} {:>8.2} {:>12.0} {:>10.0} {:>8.2}",
            batch,
            n,
            secs,
            rate,
            (after.fsyncs - before.fsyncs) as f64 / secs,
            (after.bytes_written - before.bytes_written) as f64 / secs / 1e6
        );
    }
    if let (Some(&(b0, r0)), Some(&(b1, r1))) = (rates.first(), rates.last()) {
        println!("batch {b1} vs batch {b0}: {:.0}x the entries/s", r1 / r0);
    }
    Ok(())
}
