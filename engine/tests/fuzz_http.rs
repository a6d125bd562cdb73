//! Property tests ("fuzzing" on stable) of the sans-io HTTP parsers: the request head
//! parser with the head the engine forwards, the response head parser, and the streaming
//! chunked decoder, each against a reference model written in `fuzz/`.
//!
//! `FUZZ_CASES=N` sets the cases per property (default: a bounded run for CI),
//! `FUZZ_SEED=N` fixes the random seed (fixed by default when `CI` is set). The seed
//! corpus in `tests/corpus/{request,response,chunked}/` is replayed by the `corpus_*`
//! tests; a file named `refuse-*` must be refused, `accept-*` accepted, and `bug-*` files
//! are known parser bugs, replayed by the ignored `known_bug_*` tests.

mod fuzz;

use fuzz::chunk::{encoded, hostile, reference, streamed, Outcome};
use fuzz::forward::SHAPE_COUNT;
use fuzz::req_check::{check_request, Known, STRICT};
use fuzz::resp::{check_response, Strictness};
use fuzz::{config, corpus, cuts, expect_of, pieces, positions, show, Expect, DEFAULT, SMALL};
use proptest::prelude::*;

/// Cases per property by default: about 6 s for the whole file in a debug build here.
const CASES: u32 = 25_000;

fn limits(small: bool) -> &'static engine::http::HeadLimits {
    if small {
        &SMALL
    } else {
        &DEFAULT
    }
}

/// The streamed result of `input` cut at `cuts` equals the reference, and the error kind
/// does not depend on where the input was cut.
fn chunked_property(input: &[u8], cut: &[usize]) -> Result<(), String> {
    let want = reference(input);
    let (whole, whole_err) = streamed(&[input]);
    let (split, split_err) = streamed(&pieces(input, cut));
    if whole != want || split != want || whole_err != split_err {
        return Err(format!(
            "input {}\n reference {want:?}\n whole     {whole:?} {whole_err:?}\n split     {split:?} {split_err:?}",
            show(input)
        ));
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn request_heads(input in fuzz::req_gen::request(), shape in 0..SHAPE_COUNT, small: bool) {
        if let Err(e) = check_request(&input, limits(small), shape, STRICT) {
            prop_assert!(false, "{e}\ninput: {}", show(&input));
        }
    }

    #[test]
    fn request_noise(input in fuzz::req_gen::noise(), shape in 0..SHAPE_COUNT) {
        if let Err(e) = check_request(&input, &SMALL, shape, STRICT) {
            prop_assert!(false, "{e}\ninput: {}", show(&input));
        }
    }

    #[test]
    fn response_heads((input, head) in fuzz::resp_gen::response(), small: bool) {
        if let Err(e) = check_response(&input, head, limits(small), Strictness::default()) {
            prop_assert!(false, "{e}\ninput (HEAD: {head}): {}", show(&input));
        }
    }

    #[test]
    fn chunked_matches_reference(input in hostile(), cut in cuts()) {
        if let Err(e) = chunked_property(&input, &positions(&cut, input.len())) {
            prop_assert!(false, "{e}");
        }
    }

    #[test]
    fn chunked_round_trip((data, enc, after) in encoded(), cut in cuts()) {
        let all = [enc.as_slice(), &after].concat();
        let want = Outcome::Done { data, used: enc.len() };
        let (got, err) = streamed(&pieces(&all, &positions(&cut, all.len())));
        prop_assert_eq!(&got, &want, "error {:?} for {}", err, show(&enc));
        prop_assert_eq!(reference(&all), want);
    }
}

/// Every split of a short input into two pieces, and one byte at a time.
fn chunked_all_splits(input: &[u8]) -> Result<(), String> {
    let points = if input.len() <= 400 { input.len() } else { 0 };
    for p in 0..=points {
        chunked_property(input, &[p])?;
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let (one, _) = streamed(&bytes);
    if one != reference(input) {
        return Err(format!("one byte at a time: {one:?}"));
    }
    Ok(())
}

/// Which corpus files a replay takes: every file but the known bugs, or the `bug-*`
/// files whose name starts with the given prefix.
fn selected(name: &str, bug: Option<&str>) -> bool {
    match bug {
        None => expect_of(name) != Expect::Bug,
        Some(prefix) => name.starts_with(prefix),
    }
}

fn replay_requests(bug: Option<&str>, known: Known) -> Vec<String> {
    let mut failures = Vec::new();
    for (name, input) in corpus("request") {
        let expect = expect_of(&name);
        if !selected(&name, bug) {
            continue;
        }
        for (shape, small) in (0..SHAPE_COUNT).flat_map(|s| [(s, false), (s, true)]) {
            let got = engine::http::head::parse_request(&input, limits(small));
            let verdict_ok = match expect {
                Expect::Refuse => got.is_err(),
                Expect::Accept => matches!(got, Ok(Some(_))),
                _ => true,
            };
            if !verdict_ok {
                failures.push(format!("{name}: expected {expect:?}, got {:?}", got.err()));
            }
            if let Err(e) = check_request(&input, limits(small), shape, known) {
                failures.push(format!("{name} (shape {shape}, small {small}): {e}"));
            }
        }
    }
    failures
}

fn replay_responses(bug: Option<&str>, strict: Strictness) -> Vec<String> {
    let mut failures = Vec::new();
    for (name, input) in corpus("response") {
        let expect = expect_of(&name);
        if !selected(&name, bug) {
            continue;
        }
        let got = engine::http::head::parse_response(&input, false, &DEFAULT);
        let verdict_ok = match expect {
            Expect::Refuse => got.is_err(),
            Expect::Accept => matches!(got, Ok(Some(_))),
            _ => true,
        };
        if !verdict_ok {
            failures.push(format!("{name}: expected {expect:?}, got {:?}", got.err()));
        }
        for head in [false, true] {
            if let Err(e) = check_response(&input, head, &DEFAULT, strict) {
                failures.push(format!("{name} (HEAD: {head}): {e}"));
            }
        }
    }
    failures
}

fn replay_chunked() -> Vec<String> {
    let mut failures = Vec::new();
    for (name, input) in corpus("chunked") {
        let expect = expect_of(&name);
        if !selected(&name, None) {
            continue;
        }
        let (got, err) = streamed(&[&input]);
        let verdict_ok = match expect {
            Expect::Refuse => matches!(got, Outcome::Bad { .. }),
            Expect::Accept => matches!(got, Outcome::Done { .. }),
            _ => true,
        };
        if !verdict_ok {
            failures.push(format!("{name}: expected {expect:?}, got {got:?} {err:?}"));
        }
        if let Err(e) = chunked_all_splits(&input) {
            failures.push(format!("{name}: {e}"));
        }
    }
    failures
}

fn assert_none(failures: Vec<String>) {
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn corpus_requests() {
    assert_none(replay_requests(None, STRICT));
}

#[test]
fn corpus_responses() {
    assert_none(replay_responses(None, Strictness::default()));
}

#[test]
fn corpus_chunked() {
    assert_none(replay_chunked());
}

#[test]
fn known_bug_connection_host() {
    assert_none(replay_requests(Some("bug-connection-"), STRICT));
}

/// The generators reach every verdict: enough accepted heads for the forwarding checks,
/// and each framing refusal (a guard against generators that drift into producing only
/// garbage).
#[test]
fn generators_reach_every_verdict() {
    use engine::http::RequestError as E;
    use fuzz::req_model::{judge, Verdict};
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use std::collections::BTreeMap;
    let mut runner = TestRunner::deterministic();
    let strategy = fuzz::req_gen::request();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let n = 3000;
    for _ in 0..n {
        let input = strategy.new_tree(&mut runner).unwrap().current();
        let keys = match judge(&input, &DEFAULT) {
            Verdict::Accept(a) => {
                vec![format!("{:?}", a.body).replace(|c: char| !c.is_alphabetic(), "")]
            }
            Verdict::Refuse(why) => why.iter().map(|e| format!("{e:?}")).collect(),
            Verdict::Incomplete { .. } => vec!["Incomplete".into()],
        };
        for k in keys {
            *seen.entry(k).or_default() += 1;
        }
    }
    let accepted: usize = ["None", "Length", "Chunked"]
        .iter()
        .map(|k| seen.get(*k).copied().unwrap_or(0))
        .sum();
    assert!(accepted * 6 > n, "too few accepted heads: {seen:#?}");
    for e in [
        E::BareLf,
        E::MissingHost,
        E::RepeatedHost,
        E::BadHost,
        E::BadContentLength,
        E::LengthAndChunked,
        E::ChunkedNotLast,
        E::TransferEncodingHttp10,
        E::UnknownCoding,
        E::BadTarget,
        E::Malformed,
    ] {
        assert!(
            seen.get(&format!("{e:?}")).copied().unwrap_or(0) >= 10,
            "{e:?} rarely reached: {seen:#?}"
        );
    }
}

#[test]
fn known_bug_response_empty_body_unframed() {
    let strict = Strictness {
        empty_body_framed: true,
        ..Strictness::default()
    };
    assert_none(replay_responses(Some("bug-empty-body-"), strict));
}

#[test]
fn known_bug_response_status_below_100() {
    let strict = Strictness {
        status_three_digits: true,
        ..Strictness::default()
    };
    assert_none(replay_responses(Some("bug-status-"), strict));
}

#[test]
fn known_bug_response_http10_te_reused() {
    let strict = Strictness {
        http10_te_closes: true,
        ..Strictness::default()
    };
    assert_none(replay_responses(Some("bug-http10-te-"), strict));
}
