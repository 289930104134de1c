//! The chaos run's history file (`history.jsonl`): written at the end of a run, and read back
//! by `run_n_clients --check FILE` to re-check a run without the cluster (a failing run is
//! replayed from its history, not by rerunning the seed, since timing varies).
//!
//! One JSON object a line, tagged by `op`; the format is documented for outside checkers in
//! docs/chaos-history.md. Format 2 (this one) adds a `meta` line, client ids, how an
//! unacknowledged send ended, the seqs a read saw, and the faults with their times. Format 1
//! files (no `meta` line) still read: their fields are a subset.

use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::check::{check_room, MsgId, Op, SendFailure, Subscription, Violation};

use super::chaos::ChaosReport;

/// The format this module writes (the `meta` line's `format`).
pub const FORMAT: u32 = 2;

/// One line of the history file, tagged by `op`. The field names are the file format: older
/// histories must still read, so rename nothing; new fields get defaults. Times are
/// microseconds since the run began.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Line {
    /// The first line (format 2 on): what wrote the file.
    Meta {
        /// [`FORMAT`] of the writer; a reader refuses a newer one.
        format: u32,
        /// The room every operation is on.
        #[serde(default)]
        room: String,
        /// The chaos run's seed.
        #[serde(default)]
        seed: Option<u64>,
    },
    /// An [`Op::Send`].
    Send {
        id: MsgId,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        client: String,
        invoked_us: u64,
        returned_us: u64,
        /// Absent or null: the send was never acknowledged.
        #[serde(default)]
        acked_seq: Option<u64>,
        /// `acked`, `failed` (definitely not applied) or `unknown`; absent in format 1, where
        /// a send without `acked_seq` is unknown.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outcome: Option<Outcome>,
        /// Canonical gRPC code name of the last error (`failed`/`unknown` only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        /// `x-rustyraft-reason` of the last error, if it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// When the client gave up (`failed`/`unknown` only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gave_up_us: Option<u64>,
    },
    /// An [`Op::Read`].
    Read {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        client: String,
        invoked_us: u64,
        returned_us: u64,
        from_seq: u64,
        ids: Vec<MsgId>,
        /// The seq of each id (format 2 on).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        seqs: Vec<u64>,
    },
    /// A [`Subscription`], with every `[seq, id]` it was delivered.
    Subscription {
        #[serde(default = "default_subscriber")]
        name: String,
        from_seq: u64,
        seen: Vec<(u64, MsgId)>,
    },
    /// A [`Fault`] the run injected (format 2 on).
    Fault(Fault),
    /// The room's final log, read back from the converged cluster (the last line).
    FinalLog { ids: Vec<MsgId> },
}

/// How a send ended, as the file spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Acked,
    Failed,
    Unknown,
}

/// One fault the chaos run injected, with when it began and ended, so that an outside checker
/// can line operations up against faults. Not used by the check itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// What kind: `kill`, `pause`, `partition`, `one_way`, `isolate_leader`, `membership`.
    pub kind: String,
    /// The nodes it targeted (for a partition, the minority side; for a one-way cut, `[from,
    /// to]`).
    pub nodes: Vec<u64>,
    /// When it was injected (microseconds since the run began).
    pub start_us: u64,
    /// When it was healed: the node restarted or resumed, the links healed, the membership
    /// change finished.
    pub end_us: u64,
    /// The launcher's description, e.g. "partition [1] | [2, 3]".
    #[serde(default)]
    pub detail: String,
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
                client,
                failure,
            } => {
                let outcome = match (acked, failure) {
                    (Some(_), _) => Some(Outcome::Acked),
                    (None, Some(f)) if f.definite => Some(Outcome::Failed),
                    (None, Some(_)) => Some(Outcome::Unknown),
                    // Nothing known about how it ended: written as format 1 wrote it.
                    (None, None) => None,
                };
                let f = failure.as_ref().filter(|_| acked.is_none());
                Line::Send {
                    id: id.clone(),
                    client: client.clone(),
                    invoked_us: *invoked,
                    returned_us: *returned,
                    acked_seq: *acked,
                    outcome,
                    code: f.map(|f| f.code.clone()),
                    reason: f.and_then(|f| f.reason.clone()),
                    gave_up_us: f.map(|f| f.gave_up),
                }
            }
            Op::Read {
                invoked,
                returned,
                from_seq,
                ids,
                seqs,
                client,
            } => Line::Read {
                client: client.clone(),
                invoked_us: *invoked,
                returned_us: *returned,
                from_seq: *from_seq,
                ids: ids.clone(),
                seqs: seqs.clone(),
            },
        }
    }
}

/// A chaos run's history as read back from its file.
#[derive(Debug, Default, PartialEq)]
pub struct History {
    /// The run's seed, if the file names it.
    pub seed: Option<u64>,
    /// Every client operation, in the order recorded.
    pub ops: Vec<Op>,
    /// What each subscriber was delivered.
    pub subs: Vec<Subscription>,
    /// The faults injected, in order.
    pub faults: Vec<Fault>,
    /// The room's final log.
    pub log: Vec<MsgId>,
}

/// Writes one JSON object per line: the meta line, operations, subscriptions, faults, then the
/// final log.
pub fn write_history(path: &Path, room: &str, h: &History) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let meta = Line::Meta {
        format: FORMAT,
        room: room.to_string(),
        seed: h.seed,
    };
    let subs = h.subs.iter().map(|s| Line::Subscription {
        name: s.name.clone(),
        from_seq: s.from_seq,
        seen: s.seen.clone(),
    });
    let faults = h.faults.iter().cloned().map(Line::Fault);
    let last = Line::FinalLog { ids: h.log.clone() };
    let lines = std::iter::once(meta)
        .chain(h.ops.iter().map(Line::from))
        .chain(subs)
        .chain(faults)
        .chain([last]);
    for line in lines {
        serde_json::to_writer(&mut f, &line)?;
        f.write_all(b"\n")?;
    }
    f.flush()
}

/// The operation a send line describes, or what is inconsistent about it.
#[allow(clippy::too_many_arguments)]
fn send_op(
    id: MsgId,
    client: String,
    invoked: u64,
    returned: u64,
    acked: Option<u64>,
    outcome: Option<Outcome>,
    code: Option<String>,
    reason: Option<String>,
    gave_up: Option<u64>,
) -> Result<Op, String> {
    let failure = match (outcome, acked) {
        // Format 1: no outcome; a send without an ack is unknown.
        (None, _) | (Some(Outcome::Acked), Some(_)) => None,
        (Some(Outcome::Acked), None) => return Err("outcome acked without acked_seq".into()),
        (Some(_), Some(_)) => return Err("a failed or unknown send has an acked_seq".into()),
        (Some(o), None) => Some(SendFailure {
            definite: o == Outcome::Failed,
            code: code.ok_or("a failed or unknown send needs its code")?,
            reason,
            gave_up: gave_up.ok_or("a failed or unknown send needs gave_up_us")?,
        }),
    };
    Ok(Op::Send {
        id,
        invoked,
        returned,
        acked,
        client,
        failure,
    })
}

/// Reads a history file written by [`write_history`] (or by the format 1 writer). A line that
/// is not a history line is refused with the file, the line number and what is wrong with it.
pub fn read_history(path: &Path) -> Result<History, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut h = History::default();
    let mut log = None;
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let bad = |what: String| format!("{}:{}: {what}", path.display(), n + 1);
        let line = line.map_err(|e| bad(e.to_string()))?;
        match serde_json::from_str::<Line>(&line).map_err(|e| bad(e.to_string()))? {
            Line::Meta { format, seed, .. } => {
                if format > FORMAT {
                    return Err(bad(format!(
                        "history format {format} is newer than this checker's ({FORMAT})"
                    )));
                }
                h.seed = seed;
            }
            Line::Send {
                id,
                client,
                invoked_us,
                returned_us,
                acked_seq,
                outcome,
                code,
                reason,
                gave_up_us,
            } => h.ops.push(
                send_op(
                    id,
                    client,
                    invoked_us,
                    returned_us,
                    acked_seq,
                    outcome,
                    code,
                    reason,
                    gave_up_us,
                )
                .map_err(bad)?,
            ),
            Line::Read {
                client,
                invoked_us,
                returned_us,
                from_seq,
                ids,
                seqs,
            } => h.ops.push(Op::Read {
                invoked: invoked_us,
                returned: returned_us,
                from_seq,
                ids,
                seqs,
                client,
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
            Line::Fault(f) => h.faults.push(f),
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
    let mut report = ChaosReport {
        faults: h.faults.len() as u64,
        ..Default::default()
    };
    tally(&mut report, &h.ops, &h.log, &h.subs);
    Ok(report)
}

/// Checks a room's history and records the outcome in `report`: the counts on success; on
/// failure every violation, with lost and duplicated messages counted apart. One place, so a
/// live chaos run and `--check FILE` always give the same verdict.
pub(super) fn tally(report: &mut ChaosReport, ops: &[Op], log: &[MsgId], subs: &[Subscription]) {
    report.unknown = 0;
    report.failed = 0;
    for op in ops {
        if let Op::Send {
            acked: None,
            failure,
            ..
        } = op
        {
            match failure {
                Some(f) if f.definite => report.failed += 1,
                _ => report.unknown += 1,
            }
        }
    }
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

    fn send(id: &str, invoked: u64, returned: u64, acked: Option<u64>) -> Op {
        Op::Send {
            id: id.into(),
            invoked,
            returned,
            acked,
            client: String::new(),
            failure: None,
        }
    }

    /// A format 1 history: no clients, failures, read seqs or faults.
    fn sample_v1() -> History {
        History {
            ops: vec![
                send("a", 0, 10, Some(1)),
                send("b", 11, 20, Some(2)),
                send("lost-in-flight", 21, 21, None),
                Op::Read {
                    invoked: 25,
                    returned: 30,
                    from_seq: 1,
                    ids: vec!["a".into()],
                    seqs: Vec::new(),
                    client: String::new(),
                },
            ],
            subs: vec![Subscription {
                name: "s".into(),
                from_seq: 1,
                seen: vec![(1, "a".into()), (2, "b".into())],
            }],
            log: vec!["a".into(), "b".into()],
            ..Default::default()
        }
    }

    /// The same run recorded in format 2, plus a definite failure and an unknown send.
    fn sample() -> History {
        let mut h = sample_v1();
        h.seed = Some(7);
        for (k, op) in h.ops.iter_mut().enumerate() {
            match op {
                Op::Send { client, .. } => *client = format!("writer-{k}"),
                Op::Read { client, seqs, .. } => {
                    *client = "reader-0".into();
                    *seqs = vec![1];
                }
            }
        }
        let failure = |definite: bool, code: &str, reason: Option<&str>| {
            Some(SendFailure {
                definite,
                code: code.into(),
                reason: reason.map(String::from),
                gave_up: 40,
            })
        };
        if let Op::Send { failure: f, .. } = &mut h.ops[2] {
            *f = failure(false, "DEADLINE_EXCEEDED", None);
        }
        h.ops.push(Op::Send {
            id: "refused".into(),
            invoked: 31,
            returned: 40,
            acked: None,
            client: "writer-3".into(),
            failure: failure(true, "UNAVAILABLE", Some("no-leader")),
        });
        h.faults = vec![Fault {
            kind: "partition".into(),
            nodes: vec![1],
            start_us: 12,
            end_us: 35,
            detail: "partition [1] | [2, 3]".into(),
        }];
        h
    }

    #[test]
    fn a_written_history_reads_back_the_same_and_checks_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        let h = sample();
        write_history(&path, "chaos", &h).expect("write");
        assert_eq!(read_history(&path).expect("read"), h);
        let r = check_history_file(&path).expect("parse");
        // The read at t=25 missed "b", acknowledged at t=20: a stale read, found again.
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(r.violations[0].contains("not linearizable"));
        assert_eq!((r.faults, r.failed, r.unknown), (1, 1, 1));
        // The lines an outside checker reads.
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            r#"{"op":"meta","format":2,"room":"chaos","seed":7}"#
        );
        assert!(text.contains(
            r#"{"op":"send","id":"refused","client":"writer-3","invoked_us":31,"returned_us":40,"acked_seq":null,"outcome":"failed","code":"UNAVAILABLE","reason":"no-leader","gave_up_us":40}"#
        ), "{text}");
        assert!(text.contains(
            r#"{"op":"read","client":"reader-0","invoked_us":25,"returned_us":30,"from_seq":1,"ids":["a"],"seqs":[1]}"#
        ), "{text}");
        assert!(text.contains(
            r#"{"op":"fault","kind":"partition","nodes":[1],"start_us":12,"end_us":35,"detail":"partition [1] | [2, 3]"}"#
        ), "{text}");
    }

    /// A hand-written format 2 history in which a send refused before it was proposed shows up
    /// in the final log: `--check` must flag it (a format 1 history could not tell).
    #[test]
    fn a_definitely_failed_send_in_the_log_is_flagged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        let text = concat!(
            r#"{"op":"meta","format":2,"room":"chaos"}"#,
            "\n",
            r#"{"op":"send","id":"a","client":"w0","invoked_us":0,"returned_us":10,"acked_seq":1,"outcome":"acked"}"#,
            "\n",
            r#"{"op":"send","id":"b","client":"w1","invoked_us":5,"returned_us":900,"outcome":"failed","code":"UNAVAILABLE","reason":"no-leader","gave_up_us":900}"#,
            "\n",
            r#"{"op":"send","id":"c","client":"w2","invoked_us":6,"returned_us":900,"outcome":"unknown","code":"DEADLINE_EXCEEDED","gave_up_us":900}"#,
            "\n",
            r#"{"op":"fault","kind":"kill","nodes":[2],"start_us":3,"end_us":700}"#,
            "\n",
        );
        std::fs::write(
            &path,
            format!("{text}{}\n", r#"{"op":"final_log","ids":["a","b","c"]}"#),
        )
        .expect("write");
        let r = check_history_file(&path).expect("parse");
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(
            r.violations[0].contains("failed send stored: b")
                && r.violations[0].contains("UNAVAILABLE (no-leader)"),
            "{:?}",
            r.violations
        );
        assert!(r.verdict().starts_with("verdict: VIOLATION"));
        // Without "b" in the log the same history is fine: "c" was unknown, so it may apply.
        std::fs::write(
            &path,
            format!("{text}{}\n", r#"{"op":"final_log","ids":["a","c"]}"#),
        )
        .expect("write");
        let r = check_history_file(&path).expect("parse");
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!((r.acked, r.failed, r.unknown, r.faults), (1, 1, 1, 1));
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
        assert_eq!(read_history(&path).expect("read"), sample_v1());
        let r = check_history_file(&path).expect("parse");
        assert_eq!((r.unknown, r.failed, r.faults), (1, 0, 0));
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
            r#"{"op":"meta","format":3}"#,
            r#"{"op":"send","id":"a","invoked_us":0,"returned_us":1,"outcome":"acked"}"#,
            r#"{"op":"send","id":"a","invoked_us":0,"returned_us":1,"acked_seq":1,"outcome":"failed","code":"X","gave_up_us":1}"#,
            r#"{"op":"send","id":"a","invoked_us":0,"returned_us":1,"outcome":"failed","gave_up_us":1}"#,
            r#"{"op":"send","id":"a","invoked_us":0,"returned_us":1,"outcome":"unknown","code":"X"}"#,
            r#"{"op":"send","id":"a","invoked_us":0,"returned_us":1,"outcome":"maybe"}"#,
            r#"{"op":"fault","kind":"kill","nodes":[1]}"#,
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
