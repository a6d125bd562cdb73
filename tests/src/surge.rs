//! Helpers of the surge tests (tests/tests/surge*.rs): the engine's stats and the
//! `show servers` line of one server, column by column.

use crate::Running;

/// The engine's stats (panics when it gives none).
pub fn stats(r: &Running) -> Box<engine::control::StatsView> {
    r.stats().expect("stats from a running engine")
}

/// The `show servers` line of `backend/server`, split in columns:
/// `backend/server address state weight active queued total`.
pub fn show_line(r: &Running, bs: &str) -> Vec<String> {
    let ans = r.admin("show servers");
    assert!(
        ans.starts_with("# backend/server address state weight active queued total"),
        "show servers header:\n{ans}"
    );
    assert!(ans.ends_with("\n\n"), "the answer ends with an empty line");
    ans.lines()
        .find(|l| l.split_whitespace().next() == Some(bs))
        .unwrap_or_else(|| panic!("no line for {bs} in show servers:\n{ans}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Column `i` of a [`show_line`] as a number.
pub fn col(line: &[String], i: usize) -> u64 {
    line[i]
        .parse()
        .unwrap_or_else(|_| panic!("column {i} of {line:?}"))
}
