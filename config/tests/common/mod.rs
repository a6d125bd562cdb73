//! Helpers of the loading tests: a temp folder, a base configuration, loading a text
//! that must pass or must be refused, and finding the error or warning on a marked line.
#![allow(dead_code)]

use config::*;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh folder under the system temp dir.
pub fn tempdir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "engine-config-test-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub const BASE: &str = r#"
[[frontend]]
name = "web"
bind = ["127.0.0.1:8080"]
backend = "moodle"

[[backend]]
name = "moodle"

[[backend.server]]
name = "s1"
address = "127.0.0.1:9101"
"#;

pub fn src() -> PathBuf {
    std::env::temp_dir().join("lb.toml")
}

pub fn ok(text: &str) -> Loaded {
    match load_str(text, &src()) {
        Ok(l) => l,
        Err(ds) => panic!(
            "refused:\n{}",
            ds.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

pub fn errs(text: &str) -> Vec<Diagnostic> {
    match load_str(text, &src()) {
        Ok(l) => panic!("accepted, warnings: {:?}", l.warnings),
        Err(ds) => ds,
    }
}

/// The 1-based line holding the marker `# <<`.
pub fn marked_line(text: &str) -> usize {
    text.lines()
        .position(|l| l.contains("# <<"))
        .expect("no `# <<` marker")
        + 1
}

/// `text` is refused, and among the errors one is on the marked line, its field contains
/// `field` and its message contains `msg`.
#[track_caller]
pub fn expect_error(text: &str, field: &str, msg: &str) -> Diagnostic {
    let line = marked_line(text);
    let ds = errs(text);
    let found = ds.iter().find(|d| {
        d.is_error() && d.line == line && d.field.contains(field) && d.message.contains(msg)
    });
    match found {
        Some(d) => {
            assert!(!d.fix.is_empty(), "no fix: {d}");
            d.clone()
        }
        None => panic!(
            "no error on line {line} with field ~{field:?} and message ~{msg:?}; got:\n{}",
            ds.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

/// `text` loads, with exactly one warning, on the marked line, with `field` and `msg`.
#[track_caller]
pub fn expect_warning(text: &str, field: &str, msg: &str) -> Diagnostic {
    let line = marked_line(text);
    let l = ok(text);
    assert_eq!(l.warnings.len(), 1, "warnings: {:#?}", l.warnings);
    let w = &l.warnings[0];
    assert_eq!(w.severity, Severity::Warning);
    assert_eq!(w.line, line, "{w}");
    assert!(w.field.contains(field), "{w}");
    assert!(w.message.contains(msg), "{w}");
    assert!(!w.fix.is_empty(), "{w}");
    w.clone()
}
