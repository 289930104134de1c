//! Which seeds a seeded test runs: a fixed range, the same on every run, plus fresh seeds from a
//! random base, different on every run, so that CI keeps finding new bugs instead of re-proving
//! the same 2,000 seeds.
//!
//! - Fixed seeds are `1..=fixed` (`RUSTYRAFT_SIM_SEEDS`, or the kind's own variable).
//! - Fresh seeds are `base..base + fresh` (`RUSTYRAFT_SIM_FRESH`, or the kind's own variable).
//!   The base comes from `RUSTYRAFT_SIM_BASE` (`bin/test` picks one and prints it first), or is
//!   drawn at random here. It is at least [`FRESH_FLOOR`], so fresh seeds never repeat a fixed one.
//! - A seed alone determines its run: `RUSTYRAFT_SIM_SEED=S` replays any of them, fixed or fresh.
//!
//! A failure message names the seed, the base, and the exact commands that replay both
//! ([`SeedPlan::replay`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Fresh bases start here (2^32): far above any fixed range anyone will run.
pub const FRESH_FLOOR: u64 = 1 << 32;

/// Where the fresh bases end (2^62), so that `base + fresh` never overflows.
const FRESH_CEIL: u64 = 1 << 62;

/// The environment variable that sets the fresh seeds' base, shared by every seeded test.
pub const BASE_VAR: &str = "RUSTYRAFT_SIM_BASE";

/// One seeded test's seeds, and how to name them in a replay command.
#[derive(Clone, Debug)]
pub struct SeedPlan {
    /// Fixed seeds: `1..=fixed`.
    pub fixed: u64,
    /// Fresh seeds: `base..base + fresh`.
    pub fresh: u64,
    /// First fresh seed.
    pub base: u64,
    /// The variable that sets `fixed` (e.g. `RUSTYRAFT_SIM_SEEDS`).
    pub fixed_var: &'static str,
    /// The variable that sets `fresh` (e.g. `RUSTYRAFT_SIM_FRESH`).
    pub fresh_var: &'static str,
    /// The variable that replays one seed (e.g. `RUSTYRAFT_SIM_SEED`).
    pub seed_var: &'static str,
    /// The cargo command that runs this test, e.g.
    /// `cargo test --release --test simulation disk_storage_seeds`.
    pub command: &'static str,
}

/// An unsigned integer from the environment; `None` if unset. A set but malformed value is a
/// mistake in a replay command, so it stops the test instead of silently running other seeds.
pub fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={v:?} is not an unsigned integer"),
    }
}

impl SeedPlan {
    /// Reads the plan from the environment, with these defaults for the counts.
    pub fn from_env(
        fixed_var: &'static str,
        fixed_default: u64,
        fresh_var: &'static str,
        fresh_default: u64,
        seed_var: &'static str,
        command: &'static str,
    ) -> SeedPlan {
        // One random base per process, so that every test of a run names the same one.
        static RANDOM_BASE: OnceLock<u64> = OnceLock::new();
        let base = env_u64(BASE_VAR)
            .unwrap_or_else(|| *RANDOM_BASE.get_or_init(|| fastrand::u64(FRESH_FLOOR..FRESH_CEIL)))
            .clamp(FRESH_FLOOR, FRESH_CEIL);
        SeedPlan {
            fixed: env_u64(fixed_var).unwrap_or(fixed_default),
            fresh: env_u64(fresh_var)
                .unwrap_or(fresh_default)
                .min(FRESH_CEIL >> 1),
            base,
            fixed_var,
            fresh_var,
            seed_var,
            command,
        }
    }

    /// How many seeds in all.
    pub fn len(&self) -> u64 {
        self.fixed + self.fresh
    }

    /// The `i`-th seed (`i < len()`): the fixed ones first, then the fresh ones.
    pub fn seed(&self, i: u64) -> u64 {
        if i < self.fixed {
            i + 1
        } else {
            self.base + (i - self.fixed)
        }
    }

    /// "2000 fixed seeds (1..=2000) + 500 fresh (base B)", for the summary line.
    pub fn describe(&self) -> String {
        format!(
            "{} seeds: {} fixed (1..={}) + {} fresh ({}={})",
            self.len(),
            self.fixed,
            self.fixed,
            self.fresh,
            BASE_VAR,
            self.base
        )
    }

    /// The command that replays `seed` alone, with its full trace.
    pub fn replay_seed(&self, seed: u64) -> String {
        format!(
            "replay this seed: {}={seed} {} -- --nocapture",
            self.seed_var, self.command
        )
    }

    /// The commands that replay `seed` alone and this whole run's seeds.
    pub fn replay(&self, seed: u64) -> String {
        format!(
            "{}\nreplay this run:  {}={} {}={} {}={} {}",
            self.replay_seed(seed),
            BASE_VAR,
            self.base,
            self.fixed_var,
            self.fixed,
            self.fresh_var,
            self.fresh,
            self.command
        )
    }

    /// Runs every seed on all cores; `run` returns `Ok(stats)` or `Err(())` for a failed seed,
    /// and `fold` adds a passing seed's stats to the totals. Returns the failed seeds, sorted.
    pub fn run<T, A>(
        &self,
        run: impl Fn(u64) -> Result<T, ()> + Sync,
        totals: &Mutex<A>,
        fold: impl Fn(&mut A, T) + Sync,
    ) -> Vec<u64>
    where
        A: Send,
    {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let next = AtomicU64::new(0);
        let failures: Mutex<Vec<u64>> = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= self.len() {
                        break;
                    }
                    let seed = self.seed(i);
                    match run(seed) {
                        Ok(st) => fold(&mut totals.lock().unwrap(), st),
                        Err(()) => failures.lock().unwrap().push(seed),
                    }
                });
            }
        });
        let mut failed = failures.into_inner().unwrap();
        failed.sort_unstable();
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(fixed: u64, fresh: u64, base: u64) -> SeedPlan {
        SeedPlan {
            fixed,
            fresh,
            base,
            fixed_var: "F",
            fresh_var: "N",
            seed_var: "S",
            command: "cargo test --release --test simulation",
        }
    }

    #[test]
    fn fixed_seeds_come_first_then_the_fresh_ones() {
        let p = plan(3, 2, FRESH_FLOOR + 10);
        let seeds: Vec<u64> = (0..p.len()).map(|i| p.seed(i)).collect();
        assert_eq!(seeds, [1, 2, 3, FRESH_FLOOR + 10, FRESH_FLOOR + 11]);
        let r = p.replay(FRESH_FLOOR + 11);
        assert!(
            r.contains(&format!("S={} cargo test", FRESH_FLOOR + 11)),
            "{r}"
        );
        assert!(
            r.contains(&format!("{BASE_VAR}={} F=3 N=2 cargo", FRESH_FLOOR + 10)),
            "{r}"
        );
    }
}
