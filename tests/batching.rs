//! Continuous batching on the real llama.cpp: output does not depend on B, and a finished
//! sequence's slot is taken at once.

use crate::common::*;

/// Answers by custom id after draining `h` with `--parallel parallel`.
fn answers(h: &TestHome, parallel: &str) -> Vec<(String, String, u64)> {
    h.ok(&[
        "worker",
        "--drain",
        "--n-ctx",
        "512",
        "--parallel",
        parallel,
    ]);
    let mut out: Vec<(String, String, u64)> = h
        .results(&[])
        .iter()
        .map(|r| {
            assert_eq!(r["state"], "succeeded", "{r}");
            (
                r["custom_id"].as_str().unwrap().to_string(),
                r["answer"].as_str().unwrap().to_string(),
                r["usage"]["completion_tokens"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn greedy_output_is_the_same_at_b1_and_b4() {
    let homes = [TestHome::new(), TestHome::new()];
    for h in &homes {
        for i in 0..7 {
            h.doc(&format!("d{i}.txt"), &prose(40 + i, 20 + i * 60));
        }
        h.doc("long.txt", &prose(7, 1500)); // several chunks, decoded side by side at B=4
        h.enqueue_tiny(&h.path().join("docs"), "24");
    }
    let one = answers(&homes[0], "1");
    let four = answers(&homes[1], "4");
    assert_eq!(one.len(), 8);
    let generated: u64 = one.iter().map(|a| a.2).sum();
    assert!(generated > 50, "the model generated little: {one:?}");
    for (a, b) in one.iter().zip(&four) {
        assert_eq!(a, b, "B=1 and B=4 differ");
    }
}

#[test]
fn a_finished_sequence_slot_is_reused_while_others_decode() {
    let h = TestHome::new();
    // Short and long answers alternate, so sequences end at different steps.
    for i in 0..6 {
        let doc = h.doc(&format!("b{i}.txt"), &prose(60 + i, 30));
        h.enqueue_tiny(&doc, if i % 2 == 0 { "4" } else { "48" });
    }
    let out = h
        .command(&["worker", "--drain", "--n-ctx", "512", "--parallel", "2"])
        .env("RUST_LOG", "qwen3q=debug")
        .output()
        .unwrap();
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    // Replay the log: which tags are in flight when each one starts.
    let mut in_flight: Vec<String> = Vec::new();
    let mut ended_any = false;
    let mut reused = false;
    let mut most = 0;
    for line in log.lines() {
        let Some(tag) = line
            .split("tag=")
            .nth(1)
            .map(|t| t.split_whitespace().next().unwrap().to_string())
        else {
            continue;
        };
        if line.contains("step started") {
            reused |= ended_any && !in_flight.is_empty();
            in_flight.push(tag);
            most = most.max(in_flight.len());
        } else if line.contains("step ended") {
            in_flight.retain(|t| *t != tag);
            ended_any = true;
        }
    }
    assert_eq!(most, 2, "two sequences decode together:\n{log}");
    assert!(
        reused,
        "a sequence started while another was still decoding, after one ended:\n{log}"
    );
    assert_eq!(count(&h.status(), "succeeded"), 6);
}
