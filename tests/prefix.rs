//! Shared prefixes are decoded once (issue 10 §2): a prompt skips the tokens whose KV cells a
//! slot already holds, and with batch-invariant kernels the answer is the one a fresh decode
//! gives.

use crate::common::*;

/// An instruction of a hundred-odd words that every document's prompt starts with.
fn instruction() -> String {
    format!(
        "Read the field report below. {} Then write one sentence that names the place the report is about. {{text}}",
        prose(7, 110)
    )
}

/// (custom id, answer, prompt tokens, cached tokens) of every result, by custom id.
fn answers(h: &TestHome) -> Vec<(String, String, u64, u64)> {
    answers_by_id(h, |r| {
        let usage = &r["usage"];
        (
            usage["prompt_tokens"].as_u64().unwrap(),
            usage["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap(),
        )
    })
    .into_iter()
    .map(|(id, answer, (prompt, cached))| (id, answer, prompt, cached))
    .collect()
}

fn enqueue(h: &TestHome, path: &std::path::Path) {
    let gemma = gemma();
    h.ok(&[
        "enqueue",
        s(path),
        "--model",
        s(&gemma),
        "--prompt",
        &instruction(),
        "--max-tokens",
        "24",
        "--temperature",
        "0",
    ]);
}

/// Drain `h` with batch-invariant kernels, `parallel` sequences at a time.
fn drain(h: &TestHome, n_ctx: &str, parallel: &str) {
    h.ok(&[
        "worker",
        "--drain",
        "--n-ctx",
        n_ctx,
        "--parallel",
        parallel,
        "--kernels",
        "batch-invariant",
    ]);
}

const DOCS: usize = 6;

fn write_docs(h: &TestHome) -> Vec<std::path::PathBuf> {
    (0..DOCS)
        .map(|i| h.doc(&format!("r{i}.txt"), &prose(100 + i, 20 + 15 * i)))
        .collect()
}

#[test]
fn a_shared_instruction_is_decoded_once_and_the_answers_are_those_of_fresh_decodes() {
    // Together: two slots, six prompts that share the instruction.
    let shared = TestHome::new();
    write_docs(&shared);
    enqueue(&shared, &shared.path().join("docs"));
    drain(&shared, "1024", "2");
    let together = answers(&shared);
    // Alone: every document in a worker of its own, whose context has held nothing before.
    let fresh = TestHome::new();
    for path in write_docs(&fresh) {
        enqueue(&fresh, &path);
        drain(&fresh, "1024", "2");
    }
    let alone = answers(&fresh);
    assert_eq!(together.len(), DOCS);
    assert_eq!(alone.len(), DOCS);
    for (a, b) in together.iter().zip(&alone) {
        assert_eq!(b.3, 0, "a fresh context reuses nothing: {b:?}");
        assert_eq!(
            (&a.0, &a.1, a.2),
            (&b.0, &b.1, b.2),
            "reused cells changed an answer"
        );
        assert!(
            a.3 < a.2,
            "the prompt's last token is always decoded: {a:?}"
        );
    }
    // All but the first prompt of each slot (or the first two, if both started at once and
    // one copied the other) reused the instruction's tokens: over a hundred words of it.
    let reused: Vec<u64> = together.iter().map(|a| a.3).collect();
    assert!(
        reused.iter().filter(|&&c| c >= 100).count() >= DOCS - 2,
        "cached tokens per result: {reused:?}"
    );
    assert!(together.iter().any(|a| !a.1.trim().is_empty()));
}

/// gemma attends over a sliding window of 512 tokens in most layers, and llama.cpp keeps those
/// layers' cells in a ring of the window plus one ubatch (1024 cells), overwriting the oldest
/// as a sequence grows past it: after a prompt of 1,500 tokens a slot no longer holds the
/// instruction's cells there. The next prompt must then be decoded whole, and answer as a fresh
/// decode does.
#[test]
fn cells_a_sliding_window_dropped_are_never_reused() {
    let run = |h: &TestHome, paths: &[std::path::PathBuf], each_alone: bool| {
        for p in paths {
            enqueue(h, p);
            if each_alone {
                drain(h, "2048", "1");
            }
        }
        if !each_alone {
            drain(h, "2048", "1");
        }
        answers(h)
    };
    let docs = |h: &TestHome| {
        vec![
            h.doc("a-long.txt", &prose(300, 1400)),
            h.doc("b-short.txt", &prose(301, 30)),
        ]
    };
    let one_slot = TestHome::new();
    let after_long = run(&one_slot, &docs(&one_slot), false);
    let fresh = TestHome::new();
    let alone = run(&fresh, &docs(&fresh), true);
    assert!(
        after_long[0].2 > 1200,
        "the long prompt passes the ring: {after_long:?}"
    );
    for (a, b) in after_long.iter().zip(&alone) {
        assert_eq!((&a.0, &a.1), (&b.0, &b.1), "an answer changed");
    }
    assert_eq!(
        after_long[1].3, 0,
        "the ring overwrote the instruction's cells: nothing to reuse ({after_long:?})"
    );
}
