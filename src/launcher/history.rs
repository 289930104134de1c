//! The chaos run's history file (`history.jsonl`): written at the end of a run, and read back
//! by `run_n_clients --check FILE` to re-check a run without the cluster (a failing run is
//! replayed from its history, not by rerunning the seed, since timing varies).

use crate::check::{check_room, MsgId, Op, Subscription, Violation};

use super::chaos::ChaosReport;

/// Writes one JSON object per line: operations, subscriptions, then the final log.
pub fn write_history(
    path: &std::path::Path,
    ops: &[Op],
    log: &[MsgId],
    subs: &[Subscription],
) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for op in ops {
        let line = match op {
            Op::Send {
                id,
                invoked,
                returned,
                acked,
            } => serde_json::json!({"op": "send", "id": id, "invoked_us": invoked,
                "returned_us": returned, "acked_seq": acked}),
            Op::Read {
                invoked,
                returned,
                from_seq,
                ids,
            } => serde_json::json!({"op": "read", "invoked_us": invoked, "returned_us": returned,
                "from_seq": from_seq, "ids": ids}),
        };
        writeln!(f, "{line}")?;
    }
    for s in subs {
        writeln!(
            f,
            "{}",
            serde_json::json!({"op": "subscription", "name": s.name, "from_seq": s.from_seq,
                "seen": s.seen})
        )?;
    }
    writeln!(f, "{}", serde_json::json!({"op": "final_log", "ids": log}))?;
    f.flush()
}

/// Re-checks a history file written by a chaos run (`run_n_clients --check FILE`), so that a
/// failing run can be examined again, or a fixed checker re-run, without the cluster.
pub fn check_history_file(path: &std::path::Path) -> Result<ChaosReport, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut ops = Vec::new();
    let mut subs = Vec::new();
    let mut log: Option<Vec<MsgId>> = None;
    for (n, line) in text.lines().enumerate() {
        let bad = |what: &str| format!("{}:{}: {what}", path.display(), n + 1);
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(&e.to_string()))?;
        let u = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_u64())
                .ok_or_else(|| bad(&format!("missing {k}")))
        };
        let ids = |k: &str| -> Result<Vec<MsgId>, String> {
            v.get(k)
                .and_then(|x| x.as_array())
                .ok_or_else(|| bad(&format!("missing {k}")))?
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad("an id is not a string"))
                })
                .collect()
        };
        match v.get("op").and_then(|x| x.as_str()) {
            Some("send") => ops.push(Op::Send {
                id: v
                    .get("id")
                    .and_then(|x| x.as_str())
                    .ok_or_else(|| bad("missing id"))?
                    .to_string(),
                invoked: u("invoked_us")?,
                returned: u("returned_us")?,
                acked: v.get("acked_seq").and_then(|x| x.as_u64()),
            }),
            Some("read") => ops.push(Op::Read {
                invoked: u("invoked_us")?,
                returned: u("returned_us")?,
                from_seq: u("from_seq")?,
                ids: ids("ids")?,
            }),
            Some("subscription") => {
                let seen = v
                    .get("seen")
                    .and_then(|x| x.as_array())
                    .ok_or_else(|| bad("missing seen"))?
                    .iter()
                    .map(|p| {
                        match (
                            p.get(0).and_then(|x| x.as_u64()),
                            p.get(1).and_then(|x| x.as_str()),
                        ) {
                            (Some(s), Some(id)) => Ok((s, id.to_string())),
                            _ => Err(bad("a seen entry is not [seq, id]")),
                        }
                    })
                    .collect::<Result<_, _>>()?;
                subs.push(Subscription {
                    name: v
                        .get("name")
                        .and_then(|x| x.as_str())
                        .unwrap_or("subscriber")
                        .to_string(),
                    from_seq: u("from_seq")?,
                    seen,
                });
            }
            Some("final_log") => log = Some(ids("ids")?),
            _ => return Err(bad("unknown op")),
        }
    }
    let log = log.ok_or_else(|| format!("{}: no final_log line", path.display()))?;
    let mut report = ChaosReport::default();
    tally(&mut report, &ops, &log, &subs);
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
    use crate::check::{MsgId, Op, Subscription};

    #[test]
    fn a_written_history_checks_the_same_when_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        let ops = vec![
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
            Op::Read {
                invoked: 25,
                returned: 30,
                from_seq: 1,
                ids: vec!["a".into()],
            },
        ];
        let subs = vec![Subscription {
            name: "s".into(),
            from_seq: 1,
            seen: vec![(1, "a".into()), (2, "b".into())],
        }];
        let log: Vec<MsgId> = vec!["a".into(), "b".into()];
        write_history(&path, &ops, &log, &subs).expect("write");
        let r = check_history_file(&path).expect("parse");
        // The read at t=25 missed "b", acknowledged at t=20: a stale read, found again.
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(r.violations[0].contains("not linearizable"));
        std::fs::write(&path, "{\"op\":\"nonsense\"}\n").expect("write");
        assert!(check_history_file(&path).is_err());
    }
}
