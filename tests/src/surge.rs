//! Helpers of the surge tests (tests/tests/surge*.rs): the engine's stats, and the
//! `show servers` line of one server, column by column (from [`crate::admin`]).

pub use crate::admin::{col, show_line};
use crate::Running;

/// The engine's stats (panics when it gives none).
pub fn stats(r: &Running) -> Box<engine::control::StatsView> {
    r.stats().expect("stats from a running engine")
}
