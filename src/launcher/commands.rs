//! The launcher's stdin command language, parsed into [`Command`] so that a bad line is
//! rejected (with help) before anything changes.

use std::time::Duration;

use super::processes::NodeId;

/// One operator command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// SIGKILL a node.
    Kill(NodeId),
    /// SIGTERM a node (graceful).
    Stop(NodeId),
    /// Start a node again from its data dir.
    Restart(NodeId),
    /// SIGSTOP a node.
    Pause(NodeId),
    /// SIGCONT a node.
    Resume(NodeId),
    /// Cut every link between two groups.
    Partition(Vec<NodeId>, Vec<NodeId>),
    /// Restore every link.
    Heal,
    /// Cut one node off from all others.
    Isolate(NodeId),
    /// Cut one direction of one link: messages from the first node to the second are lost,
    /// the other way still works (an asymmetric partition).
    Cut(NodeId, NodeId),
    /// Delay every peer link (0 removes it).
    Delay(Duration),
    /// Send one message.
    Send {
        /// Room.
        room: String,
        /// Text.
        text: String,
    },
    /// Print the status table.
    Status,
    /// Drive a steady load of sends per second (0 stops it).
    Load(u32),
    /// Start a fresh node with the next id and join it to the cluster as a voter.
    Add,
    /// Remove a node from the membership, then stop it.
    Remove(NodeId),
    /// Print help.
    Help,
    /// Stop everything and exit.
    Quit,
}

/// Help text, printed for `help` and after any bad command.
pub const HELP: &str = "\
commands (<id> is a node number, or `leader` for the current leader):
  kill <id>                 SIGKILL a node
  stop <id>                 SIGTERM a node (graceful shutdown)
  restart <id>              start a node again from its data dir
  pause <id> | resume <id>  SIGSTOP / SIGCONT a node
  partition <ids> | <ids>   cut the links between two groups, e.g. `partition 1 2 | 3 4 5`
  isolate <id>              cut one node off from all others
  cut <a> <b>               one-way: <a>'s messages to <b> are lost, <b> still reaches <a>
  heal                      restore every link
  delay <ms>                delay every peer link by <ms> each way (0 = none)
  send <room> <text>        send a message (any node; retried on failover)
  load <rate>               send <rate> messages/s to room `load` (0 = stop)
  add                       start a fresh node (next id, up to 9) and join it as a voter
  remove <id>               remove a node from the membership (RemoveMember), then stop it
  status                    print each node's role, term, commit, lag and the membership
  help                      this text
  quit                      stop every node and exit";

/// Parses one line. `nodes` is the highest node id in use, to reject ids beyond it here (ids
/// below it that were removed are refused when the command runs).
pub fn parse(line: &str, nodes: u64) -> Result<Command, String> {
    let mut words = line.split_whitespace();
    let Some(verb) = words.next() else {
        return Err("empty command".into());
    };
    let rest: Vec<&str> = words.collect();
    let id = |rest: &[&str]| -> Result<NodeId, String> {
        match rest {
            [one] => node_id(one, nodes),
            _ => Err(format!("`{verb}` takes one node id")),
        }
    };
    Ok(match verb {
        "kill" => Command::Kill(id(&rest)?),
        "stop" => Command::Stop(id(&rest)?),
        "restart" => Command::Restart(id(&rest)?),
        "pause" => Command::Pause(id(&rest)?),
        "resume" => Command::Resume(id(&rest)?),
        "isolate" => Command::Isolate(id(&rest)?),
        "remove" => Command::Remove(id(&rest)?),
        "add" if rest.is_empty() => Command::Add,
        "heal" if rest.is_empty() => Command::Heal,
        "status" if rest.is_empty() => Command::Status,
        "help" if rest.is_empty() => Command::Help,
        "quit" | "exit" if rest.is_empty() => Command::Quit,
        "partition" => {
            let joined = rest.join(" ");
            let Some((a, b)) = joined.split_once('|') else {
                return Err("partition needs two groups separated by `|`".into());
            };
            let group = |s: &str| -> Result<Vec<NodeId>, String> {
                let ids: Vec<NodeId> = s
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|w| !w.is_empty())
                    .map(|w| node_id(w, nodes))
                    .collect::<Result<_, _>>()?;
                if ids.is_empty() {
                    return Err("a partition group is empty".into());
                }
                Ok(ids)
            };
            let (a, b) = (group(a)?, group(b)?);
            if a.contains(&LEADER) || b.contains(&LEADER) {
                return Err("name partition groups by node number".into());
            }
            if a.iter().any(|x| b.contains(x)) {
                return Err("a node cannot be on both sides of a partition".into());
            }
            Command::Partition(a, b)
        }
        "cut" => match rest[..] {
            [a, b] => {
                let (a, b) = (node_id(a, nodes)?, node_id(b, nodes)?);
                if a == b || a == LEADER || b == LEADER {
                    return Err("cut takes two different node numbers".into());
                }
                Command::Cut(a, b)
            }
            _ => return Err("usage: cut <from> <to>".into()),
        },
        "delay" => match rest[..] {
            [ms] => Command::Delay(Duration::from_millis(
                ms.parse::<u64>()
                    .ok()
                    .filter(|&m| m <= 60_000)
                    .ok_or_else(|| format!("delay {ms:?}: expected milliseconds, 0..=60000"))?,
            )),
            _ => return Err("`delay` takes one number of milliseconds".into()),
        },
        "load" => match rest[..] {
            [r] => Command::Load(
                r.parse::<u32>()
                    .ok()
                    .filter(|&r| r <= 100_000)
                    .ok_or_else(|| format!("load {r:?}: expected messages/s, 0..=100000"))?,
            ),
            _ => return Err("`load` takes one rate".into()),
        },
        "send" => {
            if rest.len() < 2 {
                return Err("usage: send <room> <text>".into());
            }
            Command::Send {
                room: rest[0].to_string(),
                text: rest[1..].join(" "),
            }
        }
        other => return Err(format!("unknown command {other:?}")),
    })
}

/// The id that stands for "whoever leads right now" (`kill leader`); resolved when the command
/// runs, since the leader may change between typing and running.
pub const LEADER: NodeId = 0;

fn node_id(s: &str, nodes: u64) -> Result<NodeId, String> {
    if s == "leader" {
        return Ok(LEADER);
    }
    match s.trim_start_matches('n').parse::<u64>() {
        Ok(i) if (1..=nodes).contains(&i) => Ok(i),
        _ => Err(format!("{s:?} is not a node id (1..={nodes})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command() {
        assert_eq!(parse("kill 2", 3), Ok(Command::Kill(2)));
        assert_eq!(parse("  restart n3 ", 3), Ok(Command::Restart(3)));
        assert_eq!(
            parse("partition 1 2 | 3", 3),
            Ok(Command::Partition(vec![1, 2], vec![3]))
        );
        assert_eq!(
            parse("partition 1,2|3", 3),
            Ok(Command::Partition(vec![1, 2], vec![3]))
        );
        assert_eq!(
            parse("delay 150", 3),
            Ok(Command::Delay(Duration::from_millis(150)))
        );
        assert_eq!(
            parse("send general hello there", 3),
            Ok(Command::Send {
                room: "general".into(),
                text: "hello there".into()
            })
        );
        assert_eq!(parse("load 50", 3), Ok(Command::Load(50)));
        assert_eq!(parse("kill leader", 3), Ok(Command::Kill(LEADER)));
        assert_eq!(parse("isolate leader", 5), Ok(Command::Isolate(LEADER)));
        assert_eq!(parse("heal", 3), Ok(Command::Heal));
        assert_eq!(parse("cut 1 3", 3), Ok(Command::Cut(1, 3)));
        assert_eq!(parse("quit", 3), Ok(Command::Quit));
        assert_eq!(parse("add", 3), Ok(Command::Add));
        assert_eq!(parse("remove 2", 3), Ok(Command::Remove(2)));
        assert_eq!(parse("remove leader", 3), Ok(Command::Remove(LEADER)));
    }

    #[test]
    fn rejects_bad_commands() {
        for bad in [
            "",
            "kill",
            "kill 4",
            "kill 0",
            "kill x",
            "kill 1 2",
            "partition 1 2",
            "partition 1 | 1",
            "partition | 2",
            "delay -5",
            "delay 999999",
            "load many",
            "send general",
            "heal now",
            "cut 1",
            "cut 2 2",
            "add 4",
            "remove",
            "remove 7",
            "explode 1",
        ] {
            assert!(parse(bad, 3).is_err(), "{bad:?} must be rejected");
        }
    }
}
