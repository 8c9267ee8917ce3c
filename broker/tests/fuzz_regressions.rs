//! The fuzzers' saved cases, replayed on stable Rust as part of the normal
//! test run: every file under `broker/fuzz/regressions/<target>/` goes
//! through the same entry points as in the fuzz target (the shared
//! `broker/fuzz/src/feed.rs`), on a thread with the stack of a tokio worker,
//! and must come back — no panic, no stack overflow. A case with a
//! `<name>.expect` file beside it must also stop where that file says (the
//! first line is a prefix of the outcome, e.g. `json: JSON nested deeper`):
//! the refusal of a known attack is pinned, not just its survival.

use std::path::{Path, PathBuf};

#[path = "../fuzz/src/feed.rs"]
#[allow(dead_code, reason = "each test uses the entry points of its target")]
mod feed;

/// tokio's default worker stack: the stack the broker parses on.
const WORKER_STACK_BYTES: usize = 2 * 1024 * 1024;

struct Case {
    path: PathBuf,
    input: Vec<u8>,
    expect: Option<String>,
}

fn cases(target: &str) -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions").join(target);
    let mut cases: Vec<Case> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_none_or(|extension| extension != "expect"))
        .map(|path| {
            let input = std::fs::read(&path).expect("readable case");
            let expect = std::fs::read_to_string(path.with_extension("expect"))
                .ok()
                .map(|text| text.lines().next().unwrap_or("").to_owned());
            Case { path, input, expect }
        })
        .collect();
    cases.sort_by(|a, b| a.path.cmp(&b.path));
    assert!(!cases.is_empty(), "no cases under {}", dir.display());
    cases
}

/// Runs `feed` on every case of `target` on a worker-sized stack, and checks
/// each outcome against its `.expect` file.
fn replay(target: &str, feed: fn(&[u8]) -> String) {
    for case in cases(target) {
        let input = case.input.clone();
        let outcome = std::thread::Builder::new()
            .stack_size(WORKER_STACK_BYTES)
            .spawn(move || feed(&input))
            .expect("spawn")
            .join()
            .unwrap_or_else(|_| panic!("{} panicked", case.path.display()));
        if let Some(expect) = &case.expect {
            assert!(
                outcome.starts_with(expect.as_str()),
                "{}: outcome {outcome:?}, expected {expect:?}",
                case.path.display()
            );
        }
    }
}

fn text(input: &[u8]) -> &str {
    std::str::from_utf8(input).expect("a text case is UTF-8, as a WebSocket text frame is")
}

#[test]
fn engineio_socketio_cases_return() {
    replay("engineio_socketio", |input| feed::engineio_socketio(text(input)));
}

#[test]
fn json_cases_return() {
    replay("json", |input| feed::json(text(input)));
}

#[test]
fn http_head_cases_return() {
    replay("http_head", feed::http_head);
}

#[test]
fn token_cases_return() {
    replay("token", feed::token_case);
}

#[test]
fn chat_payload_cases_return() {
    replay("chat_payload", |input| feed::chat_payload(text(input)));
}
