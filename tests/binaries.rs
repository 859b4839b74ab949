//! The two binaries: `qwen3q`, which links no llama.cpp so that commands start fast, and
//! `qwen3q-engine` beside it, which decodes. The worker's runner and `calibrate` run as the
//! engine; a missing engine or one from another build is refused in one line, and nothing stored
//! is touched.

use crate::common::*;

/// A symbol of ggml's compute graph: in a binary that links llama.cpp, absent otherwise.
const LLAMA_SYMBOL: &[u8] = b"ggml_graph_compute";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn qwen3q_links_no_llama_cpp_and_its_worker_decodes_through_the_engine_binary() {
    let thin = std::fs::read(env!("CARGO_BIN_EXE_qwen3q")).unwrap();
    let engine = std::fs::read(env!("CARGO_BIN_EXE_qwen3q-engine")).unwrap();
    assert!(
        contains(&engine, LLAMA_SYMBOL),
        "the engine binary links llama.cpp (else this check proves nothing)"
    );
    assert!(
        !contains(&thin, LLAMA_SYMBOL),
        "qwen3q links llama.cpp: every command pays its start-up"
    );

    let h = TestHome::new();
    let doc = h.doc("a.txt", "The engine binary decodes this document.");
    h.enqueue_tiny(&doc, "4");
    h.ok(&["worker", "--drain"]);
    let r = &h.results(&[])[0];
    assert_eq!(r["state"], "succeeded", "{r}");
    assert!(
        r["provenance"]["engine"]
            .as_str()
            .is_some_and(|e| e.starts_with("llama.cpp")),
        "{r}"
    );
    // `calibrate` becomes the engine binary (exec) and sweeps the real model.
    let out = h.ok(&[
        "calibrate",
        s(&tiny()),
        "--max-parallel",
        "2",
        "--max-tokens",
        "4",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["points"].as_array().map(Vec::len), Some(2), "{v}");
}

#[test]
fn a_missing_engine_or_one_of_another_build_is_refused_in_one_line_and_nothing_is_lost() {
    // qwen3q alone in a directory: the commands that do not decode work, the worker names the
    // missing binary.
    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("qwen3q");
    std::fs::copy(env!("CARGO_BIN_EXE_qwen3q"), &alone).unwrap();
    let h = TestHome::with_bin(alone);
    let doc = h.doc("a.txt", "A document that waits for an engine.");
    h.enqueue_tiny(&doc, "4");
    let line = h.fails(&["worker", "--drain"], 1);
    assert!(
        line.contains("qwen3q-engine is missing") && line.contains(s(dir.path())),
        "{line}"
    );
    let line = h.fails(&["calibrate", s(&tiny())], 1);
    assert!(line.contains("qwen3q-engine is missing"), "{line}");
    assert_eq!(count(&h.status(), "queued"), 1);

    // An engine told of another build refuses, whatever the verb.
    let engine = TestHome::with_bin(env!("CARGO_BIN_EXE_qwen3q-engine").into());
    let out = engine
        .command(&["status"])
        .env("QWEN3Q_BUILD", "0000000000000000")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.lines().count() == 1 && err.contains("another build"),
        "{err}"
    );
    // Started by its own qwen3q, it runs.
    engine.ok(&["status"]);
}

/// `completions SHELL` and `man` describe the real command line, without a home or a config:
/// bash, loading the script, completes `qwen3q ba` to the batch verbs and `enqueue --wi` to
/// `--within`; the manual page renders and names the verbs.
#[test]
fn completions_complete_the_real_verbs_and_the_man_page_renders() {
    let h = TestHome::new();
    // A config that does not parse: these verbs do not read it.
    std::fs::write(h.path().join("config.toml"), "not = [toml").unwrap();
    let script = h.path().join("qwen3q.bash");
    std::fs::write(&script, h.ok(&["completions", "bash"])).unwrap();
    let complete = |words: &str| {
        let probe = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             COMP_LINE=\"{words}\"; _qwen3q qwen3q; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            s(&script)
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &probe])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let verbs = complete("qwen3q ba");
    assert!(verbs.lines().any(|l| l == "batches"), "{verbs}");
    assert!(verbs.lines().any(|l| l == "batch"), "{verbs}");
    let flags = complete("qwen3q enqueue --wi");
    assert!(flags.lines().any(|l| l == "--within"), "{flags}");
    for shell in ["zsh", "fish", "powershell"] {
        assert!(h.ok(&["completions", shell]).contains("api-key"), "{shell}");
    }
    let page = h.ok(&["man"]);
    assert!(
        page.starts_with(".ie") && page.contains(".TH qwen3q 1"),
        "{page}"
    );
    assert!(
        page.contains("batches") && page.contains("api\\-key"),
        "{page}"
    );
    let out = h.run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
}
