//! The model registry on real GGUFs: add (refusing fakes), list, rm, scan (split models as
//! one), names usable by enqueue, and memory predicted beside what a real load measured.

use crate::common::*;

fn inspect_json(h: &TestHome, model: &str) -> serde_json::Value {
    serde_json::from_str(&h.ok(&["models", "inspect", model, "--json"])).unwrap()
}

#[test]
fn registered_models_run_and_inspect_predicts_within_15_percent_of_measured() {
    let h = TestHome::new();
    let (tiny, gemma) = (tiny(), gemma());
    assert!(h
        .ok(&["models", "add", s(&tiny), "--name", "tiny"])
        .contains("added tiny"));
    h.ok(&["models", "add", s(&gemma)]);
    // A second model under a taken name, and a fake GGUF, are refused with one line.
    let err = h.fails(&["models", "add", s(&gemma), "--name", "tiny"], 3);
    assert!(
        err.contains("already registered") && err.lines().count() == 1,
        "{err}"
    );
    let fake = h.doc("fake.gguf", "GGUF but not really");
    let err = h.fails(&["models", "add", s(&fake)], 3);
    assert!(err.contains("not a usable GGUF"), "{err}");
    let list: serde_json::Value =
        serde_json::from_str(&h.ok(&["models", "list", "--json"])).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gemma-3-270m-q4_k_m", "tiny"]);

    // Jobs name registered models; the worker measures each load.
    let doc = h.doc("d.txt", &prose(5, 40));
    h.ok(&["enqueue", s(&doc), "--model", "tiny", "--max-tokens", "4"]);
    h.ok(&[
        "enqueue",
        s(&doc),
        "--model",
        "gemma-3-270m-q4_k_m",
        "--max-tokens",
        "4",
    ]);
    h.ok(&["worker", "--drain", "--n-ctx", "512", "--parallel", "2"]);
    assert_eq!(count(&h.status(), "succeeded"), 2);
    for model in ["tiny", "gemma-3-270m-q4_k_m"] {
        let v = inspect_json(&h, model);
        let row = v["memory"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["n_ctx"] == 512 && m["n_seq"] == 2)
            .unwrap_or_else(|| panic!("no 512×2 row for {model}: {v}"));
        let predicted = row["predicted"]["total"].as_f64().unwrap();
        let measured = row["measured"]["total"].as_f64().unwrap();
        let off = (predicted - measured).abs() / measured;
        assert!(
            off <= 0.15,
            "{model}: predicted {predicted}, measured {measured} ({off:.3})"
        );
        assert!(row["measured"]["context_resident"].as_u64().is_some());
    }
    // The table shows both side by side.
    let text = h.ok(&["models", "inspect", "tiny"]);
    assert!(
        text.contains("predicted") && text.contains("measured"),
        "{text}"
    );

    assert!(h.ok(&["models", "rm", "tiny"]).contains("removed tiny"));
    h.fails(&["models", "rm", "tiny"], 5);
    let err = h.fails(&["enqueue", s(&doc), "--model", "tiny", "--force"], 3);
    assert!(
        err.contains("registered model") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn scan_finds_models_where_people_keep_them_and_groups_split_parts() {
    let h = TestHome::new();
    let fake_home = h.path().join("userhome");
    let lm = fake_home.join(".lmstudio/models/org/Tiny-GGUF");
    let hf = fake_home.join(".cache/huggingface/hub/models--org--x/snapshots/abc");
    std::fs::create_dir_all(&lm).unwrap();
    std::fs::create_dir_all(&hf).unwrap();
    std::os::unix::fs::symlink(tiny(), lm.join("tiny-copy.gguf")).unwrap();
    // A split model with both parts (headers are fakes: refused at --add), and one cut short.
    std::fs::write(hf.join("big-00001-of-00002.gguf"), "x").unwrap();
    std::fs::write(hf.join("big-00002-of-00002.gguf"), "x").unwrap();
    std::fs::write(hf.join("cut-00001-of-00003.gguf"), "x").unwrap();
    let scan = |args: &[&str]| {
        let out = h.command(args).env("HOME", &fake_home).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (json, _) = scan(&["models", "scan", "--json"]);
    let found: serde_json::Value = serde_json::from_str(&json).unwrap();
    let rows: Vec<(String, usize, bool)> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["parts"].as_array().unwrap().len(),
                f["incomplete"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("big".to_string(), 2, false),
            ("cut".to_string(), 1, true),
            ("tiny-copy".to_string(), 0, false),
        ]
    );
    let (out, err) = scan(&["models", "scan", "--add"]);
    assert!(out.contains("3 models found, 1 added"), "{out}");
    assert!(
        err.contains("big-00001-of-00002.gguf"),
        "the fake split model is refused: {err}"
    );
    let list = h.ok(&["models", "list"]);
    assert!(
        list.contains("tiny-copy") && !list.contains("big"),
        "{list}"
    );
    // Scanning again adds nothing twice.
    let (out, _) = scan(&["models", "scan", "--add"]);
    assert!(
        out.contains("0 added") && out.contains("registered"),
        "{out}"
    );
}
