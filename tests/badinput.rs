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

/// A filesystem that fills up: a 3 MiB tmpfs when we may mount one (root on Linux, as in
/// CI), else a 3 MiB file-size limit on the process (RLIMIT_FSIZE), which fails writes the
/// same way from the store's point of view.
struct SmallDisk {
    home: std::path::PathBuf,
    mounted: Option<std::path::PathBuf>,
    /// Whether commands run under the file-size limit (when no tmpfs could be mounted).
    limited: std::cell::Cell<bool>,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new() -> SmallDisk {
        let dir = tempfile::Builder::new()
            .prefix("q3f")
            .tempdir_in("/tmp")
            .unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs", s(&mnt)])
            .stderr(std::process::Stdio::null())
            .status()
            .map(|st| st.success())
            .unwrap_or(false);
        if mounted {
            // Ballast, removed later to stand for a person freeing space.
            std::fs::write(mnt.join("ballast"), vec![0u8; 1 << 20]).unwrap();
        }
        SmallDisk {
            home: mnt.join("home"),
            mounted: mounted.then_some(mnt),
            limited: std::cell::Cell::new(!mounted),
            _dir: dir,
        }
    }

    /// Free space: drop the ballast, or lift the file-size limit.
    fn free_space(&self) {
        match &self.mounted {
            Some(m) => std::fs::remove_file(m.join("ballast")).unwrap(),
            None => self.limited.set(false),
        }
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_qwen3q"));
        c.args(args)
            .env("QWEN3Q_HOME", &self.home)
            .env_remove("RUST_LOG");
        if self.limited.get() {
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                c.pre_exec(|| {
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    let lim = libc::rlimit {
                        rlim_cur: 3 << 20,
                        rlim_max: 3 << 20,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        c
    }
}

impl SmallDisk {
    /// Run and insist on success; returns stdout.
    fn ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if let Some(m) = &self.mounted {
            let _ = std::process::Command::new("umount").arg(m).status();
        }
    }
}

#[test]
fn a_full_disk_gives_one_line_and_loses_nothing_stored() {
    let disk = SmallDisk::new();
    let h = TestHome::new();
    let tiny = tiny();
    let small = h.doc("small.txt", "a small document that fits");
    let big = h.doc("big.txt", &"word ".repeat(1_000_000));
    disk.ok(&["enqueue", s(&small), "--model", s(&tiny)]);
    let out = disk
        .command(&["enqueue", s(&big), "--model", s(&tiny)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("qwen3q:")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("no space left")
            || lines[0].contains("too large")
            || lines[0].contains("I/O error"),
        "{stderr}"
    );
    // Once there is space again, everything stored before is there, and the store works.
    disk.free_space();
    let jobs: serde_json::Value = serde_json::from_slice(&disk.ok(&["list", "--json"])).unwrap();
    let jobs = jobs.as_array().unwrap();
    assert_eq!(
        jobs[0]["custom_id"], "small.txt",
        "the job stored before is still there: {jobs:?}"
    );
    // The failed enqueue was not acknowledged. Whether its transaction reached the disk
    // before the space ran out depends on where the write failed; either way it is whole.
    assert!(jobs.len() <= 2, "{jobs:?}");
    if let Some(big) = jobs.get(1) {
        assert_eq!(big["custom_id"], "big.txt");
    }
    let again = h.doc("again.txt", "another small document");
    disk.ok(&["enqueue", s(&again), "--model", s(&tiny)]);
}

#[test]
fn models_inspect_reads_the_header_of_real_ggufs_and_refuses_fakes() {
    let h = TestHome::new();
    let tiny = tiny();
    let v: serde_json::Value =
        serde_json::from_str(&h.ok(&["models", "inspect", s(&tiny), "--json"])).unwrap();
    assert_eq!(v["architecture"], "qwen3");
    assert_eq!(v["layers"], 2);
    assert_eq!(v["heads"], 4);
    assert_eq!(v["kv_heads"], 2);
    assert_eq!(v["head_size"], 16);
    assert_eq!(v["context_length"], 40960);
    assert_eq!(v["vocab_size"], 151936);
    assert_eq!(v["quantization"], "F16");
    assert_eq!(v["chat_template"], true);
    let gemma = gemma();
    let v: serde_json::Value =
        serde_json::from_str(&h.ok(&["models", "inspect", s(&gemma), "--json"])).unwrap();
    assert_eq!(v["architecture"], "gemma3");
    assert_eq!(v["layers"], 18);
    assert_eq!(v["kv_heads"], 1);
    assert_eq!(v["head_size"], 256);
    assert_eq!(v["sliding_window"], 512);
    assert_eq!(v["quantization"], "Q4_K_M");
    assert_eq!(v["chat_template"], false);
    assert_eq!(v["file_bytes"], 253_113_024u64);
    let params = v["parameters"].as_u64().unwrap();
    assert!(
        (250_000_000..300_000_000).contains(&params),
        "Gemma 3 270M: {params}"
    );
    let text = h.ok(&["models", "inspect", s(&gemma)]);
    assert!(text.contains("architecture:  gemma3"), "{text}");

    let fake = h.path().join("fake.gguf");
    std::fs::write(&fake, "not a model").unwrap();
    let line = h.fails(&["models", "inspect", s(&fake)], 3);
    assert!(line.contains("not a GGUF"), "{line}");
}

#[test]
fn bad_schedule_windows_are_refused_before_the_worker_starts() {
    let h = TestHome::new();
    let err = h.fails(
        &[
            "worker",
            "--drain",
            "--window",
            "0 0 22 * * *",
            "--until",
            "07:00",
        ],
        3,
    );
    assert!(
        err.contains("five fields") && err.lines().count() == 1,
        "{err}"
    );
    let err = h.fails(
        &[
            "worker",
            "--drain",
            "--window",
            "0 22 * * *",
            "--until",
            "7am",
        ],
        3,
    );
    assert!(err.contains("HH:MM"), "{err}");
    // Half a window is a usage error (clap's, several lines).
    let out = h.run(&["worker", "--drain", "--window", "0 22 * * *"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--until"));
}

#[test]
fn service_install_runs_where_systemctl_user_works_and_says_why_where_it_does_not() {
    let h = TestHome::new();
    let user_manager = std::process::Command::new("systemctl")
        .args(["--user", "show-environment"])
        .output()
        .is_ok_and(|o| o.status.success());
    if user_manager {
        h.ok(&["service", "install", "--", "--parallel", "2"]);
        assert!(h.ok(&["service", "status"]).contains("qwen3q.service"));
        assert!(h.ok(&["service", "uninstall"]).contains("uninstalled"));
    } else {
        let err = h.fails(&["service", "install"], 1);
        assert!(err.contains("systemctl --user is not available"), "{err}");
        let err = h.fails(&["service", "status"], 1);
        assert!(err.contains("systemctl --user is not available"), "{err}");
    }
    // Logs: a worker run leaves a daily log file (JSON lines on request); `service logs` shows
    // its tail.
    let ran = h
        .command(&["worker", "--drain"])
        .env("QWEN3Q_LOG_JSON", "1")
        .output()
        .unwrap();
    assert!(ran.status.success());
    let out = h.ok(&["service", "logs", "-n", "3"]);
    assert!(!out.is_empty() && out.lines().count() <= 3, "{out}");
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{v}"
        );
    }
}

#[test]
fn control_characters_in_ids_are_refused_and_ids_find_only_their_own_jobs() {
    let h = home_with_a_job();
    // A batch line whose custom_id holds a NUL (which used to make `show`/`cancel` reach
    // another job through the store's prefix lookup) or an escape sequence: refused with its
    // line number; the good line goes in.
    let batch = h.path().join("b.jsonl");
    let line = |id: &str| {
        serde_json::json!({"custom_id": id, "body": {"messages": [{"role": "user", "content": "hi"}]}})
            .to_string()
    };
    std::fs::write(
        &batch,
        [line("keep.txt\u{0}x"), line("ok-1"), line("red\u{1b}[31m")].join("\n"),
    )
    .unwrap();
    let out = h.run(&["enqueue", "--batch", s(&batch), "--model", s(&tiny())]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("b.jsonl:1:") && err.contains("control character"),
        "{err}"
    );
    assert!(err.contains("b.jsonl:3:"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "no escape sequence reaches the terminal: {err:?}"
    );
    assert_eq!(count(&h.status(), "queued"), 2);
    // A --custom-id with one is a bad command line.
    let doc = h.doc("d.txt", "text");
    let line = h.fails(
        &[
            "enqueue",
            s(&doc),
            "--custom-id",
            "a\nb",
            "--model",
            s(&tiny()),
        ],
        2,
    );
    assert!(line.contains("control character"), "{line}");
    // A name that is another id's beginning finds nothing (the store's exact lookup is
    // unit-tested with ids that hold a NUL, which no command line can pass).
    let out = h.run(&["cancel", "keep"]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(h.show("1")["state"], "queued");
}

#[test]
fn a_dangling_symlink_or_a_loop_in_a_directory_is_skipped_and_counted() {
    let h = TestHome::new();
    h.doc("dir/a.txt", "good text one");
    let dir = h.path().join("docs/dir");
    std::os::unix::fs::symlink(dir.join("gone.txt"), dir.join("dangling.txt")).unwrap();
    std::os::unix::fs::symlink(&dir, dir.join("loop")).unwrap();
    let out = h.run(&["enqueue", s(&dir), "--model", s(&tiny())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("queued 1") && stderr.contains("unreadable 2"),
        "{stderr}"
    );
    assert_eq!(count(&h.status(), "queued"), 1);
}

#[test]
fn results_out_writes_every_file_whatever_the_ids_length() {
    let h = TestHome::new();
    let tiny = tiny();
    let long = "é".repeat(300);
    for (id, text) in [(long.as_str(), "first text"), ("short", "second text")] {
        let doc = h.doc(&format!("{}.txt", text.len()), text);
        h.ok(&[
            "enqueue",
            s(&doc),
            "--custom-id",
            id,
            "--model",
            s(&tiny),
            "--max-tokens",
            "4",
        ]);
    }
    h.ok(&["worker", "--drain"]);
    let out_dir = h.path().join("answers");
    h.ok(&["results", "--out", s(&out_dir)]);
    let mut names: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names[0].starts_with("1-éé") && names[0].len() <= 255,
        "{names:?}"
    );
    assert_eq!(names[1], "2-short.txt");
}

#[test]
fn a_batch_file_may_be_a_pipe_but_not_a_directory() {
    let h = TestHome::new();
    let line = |id: &str| {
        serde_json::json!({"custom_id": id, "body": {"messages": [{"role": "user", "content": id}]}})
            .to_string()
    };
    let batch = h.path().join("b.jsonl");
    std::fs::write(&batch, [line("p-1"), line("p-2"), line("p-3")].join("\n")).unwrap();
    // Read twice (checked, then sent): a pipe is copied first, so nothing is lost.
    let script = format!(
        "cat '{}' | exec '{}' enqueue --batch /dev/stdin --model '{}'",
        s(&batch),
        env!("CARGO_BIN_EXE_qwen3q"),
        s(&tiny())
    );
    let out = h.sh(&script);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(count(&h.status(), "queued"), 3);
    // A directory is refused at once (it used to be read forever, one error a line).
    let line = h.fails(
        &["enqueue", "--batch", s(h.path()), "--model", s(&tiny())],
        3,
    );
    assert!(line.contains("a directory"), "{line}");
    assert_eq!(count(&h.status(), "queued"), 3);
}

#[test]
fn output_into_a_pipe_that_closes_ends_quietly() {
    let h = home_with_a_job();
    // Thousands of lines into `head -c 1`: the writes after the first byte meet a closed pipe.
    let ids = vec!["1"; 3000].join(" ");
    let script = format!(
        "'{}' show {ids} | head -c 1 > /dev/null",
        env!("CARGO_BIN_EXE_qwen3q")
    );
    let out = h.sh(&script);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
    assert_intact(&h);
}

#[test]
fn a_home_open_to_others_is_tightened_with_its_store() {
    use std::os::unix::fs::PermissionsExt;
    let h = home_with_a_job();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // A home (and store) made readable by others, as a hand-made directory or a loose umask
    // leaves them.
    std::fs::set_permissions(h.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = h.path().join("store");
    for entry in std::fs::read_dir(&store).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    h.ok(&["status"]);
    assert_eq!(mode(h.path()), 0o700);
    assert_eq!(mode(&store), 0o700);
    for entry in std::fs::read_dir(&store).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }
    assert_intact(&h);
}

#[test]
fn a_prompt_holding_the_document_twice_is_refused_at_enqueue() {
    let h = home_with_a_job();
    let doc = h.doc("twice.txt", &prose(3, 50));
    let line = h.fails(
        &[
            "enqueue",
            s(&doc),
            "--prompt",
            "Compare {text} with {text}",
            "--model",
            s(&tiny()),
        ],
        3,
    );
    assert!(line.contains("{text} 2 times"), "{line}");
    assert_intact(&h);
}

#[test]
fn a_batch_line_is_the_same_job_only_with_the_same_id_messages_and_parameters() {
    let h = TestHome::new();
    let tiny = tiny();
    let line = |id: &str, extra: serde_json::Value| {
        let mut body = serde_json::json!({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a river."}]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::json!({"custom_id": id, "body": body}).to_string()
    };
    let none = serde_json::json!({});
    let batch = h.path().join("b.jsonl");
    std::fs::write(
        &batch,
        [
            line("a", none.clone()),
            // The same messages under another id, another temperature, another seed, another
            // body field kept as it is: four more jobs (schema 4 made them one).
            line("b", none.clone()),
            line("c", serde_json::json!({"temperature": 0.5})),
            line("d", serde_json::json!({"seed": 3})),
            line("e", serde_json::json!({"user": "someone"})),
            // An id used twice in one file: refused, with both line numbers.
            line("a", serde_json::json!({"temperature": 0.9})),
        ]
        .join("\n"),
    )
    .unwrap();
    let out = h.run(&["enqueue", "--batch", s(&batch), "--model", s(&tiny)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("b.jsonl:6:") && err.contains("\"a\" is also on line 1"),
        "{err}"
    );
    let listed: serde_json::Value = serde_json::from_str(&h.ok(&["list", "--json"])).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["custom_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b", "c", "d", "e"]);
    // A listing shows a chat's turns, not its messages (those are the document).
    assert_eq!(
        listed[0]["task"],
        serde_json::json!({"name": "chat", "turns": [
            {"role": "system", "bytes": 9}, {"role": "user", "bytes": 13}]})
    );
    // Re-running the file is idempotent: every good line finds its job.
    let out = h.run(&[
        "enqueue",
        "--batch",
        s(&batch),
        "--model",
        s(&tiny),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let outcomes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let outcomes = outcomes.as_array().unwrap();
    assert_eq!(outcomes.len(), 5, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| o["outcome"].as_str().unwrap().starts_with("exists")),
        "{outcomes:?}"
    );
    // --strict refuses the file for its repeated id.
    let out = h.run(&[
        "enqueue",
        "--batch",
        s(&batch),
        "--model",
        s(&tiny),
        "--strict",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(count(&h.status(), "queued"), 5);
    // Documents from files: the same text with other parameters is other work; with the
    // same, the same job.
    let doc = h.doc("d.txt", "a document");
    let enqueue = |max: &str| h.ok(&["enqueue", s(&doc), "--model", s(&tiny), "--max-tokens", max]);
    assert!(enqueue("8").contains("queued #6"));
    assert!(enqueue("9").contains("queued #7"));
    let again = enqueue("8");
    assert!(again.contains("exists") && again.contains("#6"), "{again}");
    // The conversation the model reads is the one in the file.
    h.ok(&["cancel", "b", "c", "d", "e", "6", "7"]);
    let out = h.run(&["-vv", "worker", "--drain", "--n-ctx", "256"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Be brief.") && stderr.contains("Name a river."),
        "the prompt carries both messages"
    );
    assert_eq!(h.show("a")["state"], "succeeded");
}

#[test]
fn a_damaged_stored_job_is_quarantined_and_everything_else_goes_on() {
    let h = TestHome::new();
    for (name, text) in [("a.txt", "first document"), ("b.txt", "second document")] {
        let doc = h.doc(name, text);
        h.enqueue_tiny(&doc, "4");
    }
    // Damage job 1's stored value the way a bad disk sector or an older bug would: sled reads
    // it back fine (its own checksums hold), qwen3q's decoder does not. Written with the same
    // sled the binary uses, while no qwen3q process has the store open.
    {
        let db = sled::open(h.path().join("store")).unwrap();
        let jobs = db.open_tree("jobs").unwrap();
        let key = 1u64.to_be_bytes();
        let mut raw = jobs.get(key).unwrap().unwrap().to_vec();
        assert_eq!(
            raw[0],
            qwen3q::queue::codec::SCHEMA_VERSION,
            "a current version byte: the body is what gets damaged"
        );
        raw.truncate(12);
        raw.extend([0xff; 20]);
        jobs.insert(key, raw).unwrap();
        db.flush().unwrap();
    }
    // `list` goes on and shows the stand-in; `status` counts it; the worker runs the rest.
    let listed: serde_json::Value = serde_json::from_str(&h.ok(&["list", "--json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert!(h.ok(&["status"]).contains("damaged: 1 jobs quarantined"));
    h.ok(&["worker", "--drain", "--n-ctx", "256"]);
    let shown = h.show("1");
    assert_eq!(shown["state"], "dead", "{shown}");
    assert!(
        shown["error"]
            .as_str()
            .unwrap()
            .starts_with("quarantined: its stored value is damaged"),
        "{shown}"
    );
    assert_eq!(h.show("b.txt")["state"], "succeeded");
    assert_eq!(h.results(&[]).len(), 2, "results go on too");
}

/// A large document lives in a file beside the store (schema 6): a file gone or damaged is
/// that job's error — dead at once, naming the file — and every other job runs.
#[test]
fn a_document_file_gone_or_damaged_kills_its_job_only() {
    let h = TestHome::new();
    let big = |n: usize| -> String {
        (0..2500)
            .map(|i| format!("Document {n}, line {i}, of a large text.\n"))
            .collect()
    };
    for (name, text) in [
        ("gone.txt", big(1)),
        ("flipped.txt", big(2)),
        ("fine.txt", big(3)),
        ("small.txt", "a small document".to_string()),
    ] {
        let doc = h.doc(name, &text);
        h.enqueue_tiny(&doc, "4");
    }
    let mut files = h.document_files();
    assert_eq!(files.len(), 3, "the three large documents: {files:?}");
    let mut of = |needle: &str| {
        let i = files
            .iter()
            .position(|p| std::fs::read_to_string(p).unwrap().starts_with(needle))
            .unwrap();
        files.remove(i)
    };
    std::fs::remove_file(of("Document 1,")).unwrap();
    let flipped = of("Document 2,");
    let mut bytes = std::fs::read(&flipped).unwrap();
    bytes[500] ^= 0x20;
    std::fs::write(&flipped, bytes).unwrap();
    h.ok(&["worker", "--drain", "--n-ctx", "256"]);
    for (job, why) in [("gone.txt", "is missing"), ("flipped.txt", "checksum")] {
        let shown = h.show(job);
        assert_eq!(shown["state"], "dead", "{shown}");
        let error = shown["error"].as_str().unwrap();
        assert!(
            error.contains("stored document cannot be read") && error.contains(why),
            "{shown}"
        );
    }
    assert_eq!(h.show("fine.txt")["state"], "succeeded");
    assert_eq!(h.show("small.txt")["state"], "succeeded");
}

/// A document file no job names (a command killed between writing it and committing its job)
/// is removed when the worker starts; a file the store did not write is left alone.
#[test]
fn the_worker_removes_document_files_no_job_names() {
    let h = TestHome::new();
    let big: String = (0..2500)
        .map(|i| format!("Line {i} of a large text.\n"))
        .collect();
    let doc = h.doc("kept.txt", &big);
    h.enqueue_tiny(&doc, "4");
    let dir = h.path().join("store/documents");
    let orphan = dir.join("0123456789abcdef0123456789abcdef");
    let foreign = dir.join("notes.txt");
    std::fs::write(&orphan, "written, never committed").unwrap();
    std::fs::write(&foreign, "not the store's").unwrap();
    h.ok(&["worker", "--drain", "--n-ctx", "1024"]);
    assert!(!orphan.exists(), "the orphan went");
    assert!(foreign.exists(), "a file the store did not write stays");
    assert_eq!(
        h.show("kept.txt")["state"],
        "succeeded",
        "its own file was read"
    );
    assert_eq!(h.document_files().len(), 2);
}
