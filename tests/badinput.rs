//! Bad input: a one-line error, a non-zero exit, and nothing already stored is lost.

use crate::common::*;

/// A home with one job in it, to prove each refusal leaves the store intact.
fn home_with_a_job() -> TestHome {
    let h = TestHome::new();
    let doc = h.doc("keep.txt", "a document that must survive every refusal");
    let tiny = tiny();
    h.ok(&["enqueue", s(&doc), "--model", s(&tiny)]);
    h
}

fn assert_intact(h: &TestHome) {
    let status = h.status();
    assert_eq!(count(&status, "queued"), 1, "{status}");
    assert_eq!(h.show("1")["custom_id"], "keep.txt");
}

#[test]
fn bad_documents_are_refused_one_line_each() {
    let h = home_with_a_job();
    let tiny = tiny();
    let binary = h.path().join("bin.dat");
    std::fs::write(&binary, b"PK\x03\x04\x00\x00binary").unwrap();
    let empty = h.doc("empty.txt", "");
    let blank = h.doc("blank.txt", "  \n\t\n");
    let latin1 = h.path().join("latin1.txt");
    std::fs::write(&latin1, b"caf\xe9 cr\xe8me").unwrap();
    let big = h.doc("big.txt", &"x".repeat(5000));
    let cases: [(&std::path::Path, &[&str], &str); 5] = [
        (&binary, &[], "binary"),
        (&empty, &[], "empty"),
        (&blank, &[], "empty"),
        (&latin1, &[], "not UTF-8"),
        (&big, &["--max-file-bytes", "1000"], "too large"),
    ];
    for (path, extra, why) in cases {
        let mut args = vec!["enqueue", s(path), "--model", s(&tiny)];
        args.extend_from_slice(extra);
        let line = h.fails(&args, 3);
        assert!(line.contains(why), "{path:?}: {line}");
        assert!(
            line.contains(path.file_name().unwrap().to_str().unwrap()),
            "{line}"
        );
        assert_intact(&h);
    }
}

#[test]
fn a_directory_skips_and_counts_bad_files_and_takes_the_rest() {
    let h = TestHome::new();
    let tiny = tiny();
    h.doc("dir/a.txt", "good text one");
    h.doc("dir/b.md", "good text two");
    h.doc("dir/empty.txt", "");
    std::fs::write(h.path().join("docs/dir/c.bin"), b"\x00\x01\x02").unwrap();
    let dir = h.path().join("docs/dir");
    let out = h.run(&["enqueue", s(&dir), "--model", s(&tiny)]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("queued 2") && stderr.contains("skipped 2"),
        "{stderr}"
    );
    assert!(
        stderr.contains("binary 1") && stderr.contains("empty 1"),
        "{stderr}"
    );
    assert_eq!(count(&h.status(), "queued"), 2);
    // A glob that matches nothing is an error.
    let line = h.fails(
        &["enqueue", s(&dir), "--glob", "*.pdf", "--model", s(&tiny)],
        3,
    );
    assert!(line.contains("no files match"), "{line}");
    // Only the matching files.
    let out = h.ok(&[
        "enqueue",
        s(&dir),
        "--glob",
        "*.md",
        "--model",
        s(&tiny),
        "--force",
    ]);
    assert!(out.contains("b.md") && !out.contains("a.txt"), "{out}");
}

#[test]
fn missing_paths_and_bad_models_are_refused() {
    let h = home_with_a_job();
    let tiny = tiny();
    let doc = h.doc("ok.txt", "fine text");

    let line = h.fails(&["enqueue", "/no/such/file.txt", "--model", s(&tiny)], 3);
    assert!(line.contains("no such file or directory"), "{line}");
    assert_intact(&h);

    let line = h.fails(&["enqueue", s(&doc), "--model", "/no/such/model.gguf"], 3);
    assert!(line.contains("model file not found"), "{line}");
    assert_intact(&h);

    let line = h.fails(&["enqueue", s(&doc)], 3);
    assert!(line.contains("no model given"), "{line}");

    let fake = h.path().join("fake.gguf");
    std::fs::write(&fake, "this is not a model at all").unwrap();
    let line = h.fails(&["enqueue", s(&doc), "--model", s(&fake)], 3);
    assert!(line.contains("not a GGUF"), "{line}");
    assert_intact(&h);

    let truncated = h.path().join("truncated.gguf");
    let bytes = std::fs::read(&tiny).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let line = h.fails(&["enqueue", s(&doc), "--model", s(&truncated)], 3);
    assert!(line.contains("truncated"), "{line}");
    assert_intact(&h);

    let line = h.fails(
        &[
            "enqueue",
            s(&doc),
            "--model",
            s(&tiny),
            "--task",
            "classify",
        ],
        3,
    );
    assert!(line.contains("--labels"), "{line}");
    assert_intact(&h);
}

#[test]
fn a_model_that_breaks_after_enqueue_fails_the_job_not_the_worker() {
    let h = TestHome::new();
    let model = h.path().join("model.gguf");
    std::fs::copy(tiny(), &model).unwrap();
    let a = h.doc("a.txt", "first");
    let b = h.doc("b.txt", "second");
    h.ok(&[
        "enqueue",
        s(&a),
        "--model",
        s(&model),
        "--max-attempts",
        "1",
    ]);
    h.ok(&["enqueue", s(&b), "--model", s(&tiny()), "--max-tokens", "4"]);
    // The file is cut in half after the job was accepted.
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    h.ok(&["worker", "--drain"]);
    let a = h.show("1");
    assert_eq!(a["state"], "dead", "{a}");
    assert!(a["error"].as_str().unwrap().contains("truncated"), "{a}");
    assert_eq!(h.show("2")["state"], "succeeded");
}

#[test]
fn a_corrupt_store_gives_one_line() {
    let h = TestHome::new();
    std::fs::create_dir_all(h.path().join("store")).unwrap();
    std::fs::write(
        h.path().join("store/conf"),
        b"\xff\xff garbage that is not sled's config",
    )
    .unwrap();
    std::fs::write(h.path().join("store/db"), vec![0xAB; 4096]).unwrap();
    let line = h.fails(&["status"], 1);
    assert!(line.contains("cannot be opened"), "{line}");
    let out = h.run(&["status"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).lines().count(),
        1,
        "nothing but the one line"
    );
}
