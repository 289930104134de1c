//! The chaos run's history file (`history.jsonl`): written at the end of a run, and read back
//! by `run_n_clients --check FILE` to re-check a run without the cluster (a failing run is
//! replayed from its history, not by rerunning the seed, since timing varies).

use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::check::{check_room, MsgId, Op, Subscription, Violation};

use super::chaos::ChaosReport;

/// One line of the history file, tagged by `op`. The field names are the file format: older
/// histories must still read, so rename nothing. Times are microseconds since the run began.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Line {
    /// An [`Op::Send`].
    Send {
        id: MsgId,
        invoked_us: u64,
        returned_us: u64,
        /// Absent or null: the send was never acknowledged.
        #[serde(default)]
        acked_seq: Option<u64>,
    },
    /// An [`Op::Read`].
    Read {
        invoked_us: u64,
        returned_us: u64,
        from_seq: u64,
        ids: Vec<MsgId>,
    },
    /// A [`Subscription`], with every `[seq, id]` it was delivered.
    Subscription {
        #[serde(default = "default_subscriber")]
        name: String,
        from_seq: u64,
        seen: Vec<(u64, MsgId)>,
    },
    /// The room's final log, read back from the converged cluster (the last line).
    FinalLog { ids: Vec<MsgId> },
}

fn default_subscriber() -> String {
    "subscriber".to_string()
}

impl From<&Op> for Line {
    fn from(op: &Op) -> Line {
        match op {
            Op::Send {
                id,
                invoked,
                returned,
                acked,
            } => Line::Send {
                id: id.clone(),
                invoked_us: *invoked,
                returned_us: *returned,
                acked_seq: *acked,
            },
            Op::Read {
                invoked,
                returned,
                from_seq,
                ids,
            } => Line::Read {
                invoked_us: *invoked,
                returned_us: *returned,
                from_seq: *from_seq,
                ids: ids.clone(),
            },
        }
    }
}

/// A chaos run's history as read back from its file.
#[derive(Debug, Default, PartialEq)]
pub struct History {
    /// Every client operation, in the order recorded.
    pub ops: Vec<Op>,
    /// What each subscriber was delivered.
    pub subs: Vec<Subscription>,
    /// The room's final log.
    pub log: Vec<MsgId>,
}

/// Writes one JSON object per line: operations, subscriptions, then the final log.
pub fn write_history(
    path: &Path,
    ops: &[Op],
    log: &[MsgId],
    subs: &[Subscription],
) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let subs = subs.iter().map(|s| Line::Subscription {
        name: s.name.clone(),
        from_seq: s.from_seq,
        seen: s.seen.clone(),
    });
    let last = Line::FinalLog { ids: log.to_vec() };
    for line in ops.iter().map(Line::from).chain(subs).chain([last]) {
        serde_json::to_writer(&mut f, &line)?;
        f.write_all(b"\n")?;
    }
    f.flush()
}

/// Reads a history file written by [`write_history`]. A line that is not a history line is
/// refused with the file, the line number and what is wrong with it.
pub fn read_history(path: &Path) -> Result<History, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut h = History::default();
    let mut log = None;
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let bad = |what: String| format!("{}:{}: {what}", path.display(), n + 1);
        let line = line.map_err(|e| bad(e.to_string()))?;
        match serde_json::from_str::<Line>(&line).map_err(|e| bad(e.to_string()))? {
            Line::Send {
                id,
                invoked_us,
                returned_us,
                acked_seq,
            } => h.ops.push(Op::Send {
                id,
                invoked: invoked_us,
                returned: returned_us,
                acked: acked_seq,
            }),
            Line::Read {
                invoked_us,
                returned_us,
                from_seq,
                ids,
            } => h.ops.push(Op::Read {
                invoked: invoked_us,
                returned: returned_us,
                from_seq,
                ids,
            }),
            Line::Subscription {
                name,
                from_seq,
                seen,
            } => h.subs.push(Subscription {
                name,
                from_seq,
                seen,
            }),
            Line::FinalLog { ids } => log = Some(ids),
        }
    }
    h.log = log.ok_or_else(|| format!("{}: no final_log line", path.display()))?;
    Ok(h)
}

/// Re-checks a history file written by a chaos run (`run_n_clients --check FILE`), so that a
/// failing run can be examined again, or a fixed checker re-run, without the cluster.
pub fn check_history_file(path: &Path) -> Result<ChaosReport, String> {
    let h = read_history(path)?;
    let mut report = ChaosReport::default();
    tally(&mut report, &h.ops, &h.log, &h.subs);
    Ok(report)
}

/// Checks a room's history and records the outcome in `report`: the counts on success; on
/// failure every violation, with lost and duplicated messages counted apart. One place, so a
/// live chaos run and `--check FILE` always give the same verdict.
pub(super) fn tally(report: &mut ChaosReport, ops: &[Op], log: &[MsgId], subs: &[Subscription]) {
    match check_room(ops, log, subs) {
        Ok(s) => {
            report.acked = s.acked;
            report.reads = s.reads;
            report.delivered = s.delivered;
        }
        Err(vs) => {
            report.acked = ops
                .iter()
                .filter(|o| matches!(o, Op::Send { acked: Some(_), .. }))
                .count() as u64;
            for v in vs {
                match &v {
                    Violation::Lost { .. } => report.lost += 1,
                    Violation::Duplicated { .. } => report.duplicated += 1,
                    _ => {}
                }
                report.violations.push(v.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> History {
        History {
            ops: vec![
                Op::Send {
                    id: "a".into(),
                    invoked: 0,
                    returned: 10,
                    acked: Some(1),
                },
                Op::Send {
                    id: "b".into(),
                    invoked: 11,
                    returned: 20,
                    acked: Some(2),
                },
                Op::Send {
                    id: "lost-in-flight".into(),
                    invoked: 21,
                    returned: 21,
                    acked: None,
                },
                Op::Read {
                    invoked: 25,
                    returned: 30,
                    from_seq: 1,
                    ids: vec!["a".into()],
                },
            ],
            subs: vec![Subscription {
                name: "s".into(),
                from_seq: 1,
                seen: vec![(1, "a".into()), (2, "b".into())],
            }],
            log: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn a_written_history_reads_back_the_same_and_checks_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        let h = sample();
        write_history(&path, &h.ops, &h.log, &h.subs).expect("write");
        assert_eq!(read_history(&path).expect("read"), h);
        let r = check_history_file(&path).expect("parse");
        // The read at t=25 missed "b", acknowledged at t=20: a stale read, found again.
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(r.violations[0].contains("not linearizable"));
    }

    /// Lines as the earlier hand-written format put them (keys sorted, `acked_seq: null`):
    /// saved histories must still check.
    #[test]
    fn the_earlier_format_still_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("old.jsonl");
        let old = concat!(
            r#"{"acked_seq":1,"id":"a","invoked_us":0,"op":"send","returned_us":10}"#,
            "\n",
            r#"{"acked_seq":2,"id":"b","invoked_us":11,"op":"send","returned_us":20}"#,
            "\n",
            r#"{"acked_seq":null,"id":"lost-in-flight","invoked_us":21,"op":"send","returned_us":21}"#,
            "\n",
            r#"{"from_seq":1,"ids":["a"],"invoked_us":25,"op":"read","returned_us":30}"#,
            "\n",
            r#"{"from_seq":1,"name":"s","op":"subscription","seen":[[1,"a"],[2,"b"]]}"#,
            "\n",
            r#"{"ids":["a","b"],"op":"final_log"}"#,
            "\n",
        );
        std::fs::write(&path, old).expect("write");
        assert_eq!(read_history(&path).expect("read"), sample());
    }

    #[test]
    fn a_malformed_line_is_refused_with_its_number() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.jsonl");
        let good = r#"{"op":"final_log","ids":[]}"#;
        for bad in [
            r#"{"op":"nonsense"}"#,
            r#"{"op":"send","id":"a","invoked_us":0}"#,
            r#"{"op":"read","invoked_us":0,"returned_us":1,"from_seq":1,"ids":[7]}"#,
            r#"{"op":"subscription","from_seq":1,"seen":[[1]]}"#,
            "not json",
            "",
        ] {
            std::fs::write(&path, format!("{good}\n{bad}\n")).expect("write");
            let e = check_history_file(&path).expect_err(bad);
            assert!(e.contains("bad.jsonl:2: "), "{bad:?} gave {e}");
        }
        std::fs::write(&path, "").expect("write");
        let e = check_history_file(&path).expect_err("empty file");
        assert!(e.contains("no final_log"), "{e}");
    }
}
