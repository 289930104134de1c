//! `run_n_clients`: starts N local nodes as a live cluster simulation.
use clap::Parser;

/// Command line of `run_n_clients`.
#[derive(Parser, Debug)]
#[command(
    name = "run_n_clients",
    version,
    about = "Run a local RustyRaft cluster"
)]
struct Cli {
    /// Number of nodes (3, 5 or 7 recommended).
    n: usize,
}

fn main() {
    let cli = Cli::parse();
    eprintln!(
        "run_n_clients: {} nodes requested; the launcher is not built yet",
        cli.n
    );
    std::process::exit(2);
}
