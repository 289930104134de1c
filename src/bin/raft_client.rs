//! `raft_client`: one RustyRaft node (`run`) plus the client subcommands.
use clap::Parser;

/// Command line of `raft_client`.
#[derive(Parser, Debug)]
#[command(name = "raft_client", version, about = "RustyRaft node and client")]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!("raft_client: the node and client commands are not built yet");
    std::process::exit(2);
}
