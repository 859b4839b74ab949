//! Memory governance on the real llama.cpp path: `calibrate` measures and stores a curve that
//! `worker --adaptive` starts from; `--model auto --quality` picks among registered models by
//! the memory free and records why.

use crate::common::*;

#[test]
fn calibrate_stores_a_curve_and_the_adaptive_worker_starts_at_its_knee() {
    let h = TestHome::new();
    h.ok(&["models", "add", s(&tiny()), "--name", "tiny"]);
    let out = h.ok(&[
        "calibrate",
        "tiny",
        "--max-parallel",
        "4",
        "--n-ctx",
        "512",
        "--max-tokens",
        "16",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let points = v["points"].as_array().unwrap();
    let bs: Vec<u64> = points
        .iter()
        .map(|p| p["n_seq"].as_u64().unwrap())
        .collect();
    assert_eq!(bs, [1, 2, 4], "{v}");
    assert!(
        points
            .iter()
            .all(|p| p["tokens_per_sec"].as_f64().unwrap() > 0.0
                && p["memory"].as_u64().unwrap() > 0),
        "{v}"
    );
    let knee = v["knee"].as_u64().unwrap();
    assert!(bs.contains(&knee));
    // Stored: inspect shows the curve, and the loads it measured.
    let inspect: serde_json::Value =
        serde_json::from_str(&h.ok(&["models", "inspect", "tiny", "--json"])).unwrap();
    assert_eq!(inspect["calibrations"][0]["n_ctx"], 512, "{inspect}");
    assert_eq!(inspect["calibrations"][0]["knee"], knee);
    assert!(inspect["memory"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["n_ctx"] == 512 && m["n_seq"] == 4 && m["measured"].is_object()));
    // The adaptive worker's first batch on that model and context starts at the knee.
    let doc = h.doc("d.txt", &prose(3, 60));
    h.ok(&["enqueue", s(&doc), "--model", "tiny", "--max-tokens", "4"]);
    h.ok(&[
        "worker",
        "--drain",
        "--adaptive",
        "--parallel",
        "4",
        "--n-ctx",
        "512",
    ]);
    let log = std::fs::read_dir(h.path().join("logs"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    assert!(
        log.contains("starting at the calibrated knee") && log.contains(&format!("knee={knee}")),
        "{log}"
    );
    let r = &h.results(&[])[0];
    assert_eq!(r["parameters"]["n_seq"].as_u64(), Some(knee), "{r}");
}

#[test]
fn model_auto_picks_by_quality_among_registered_models_and_records_why() {
    let h = TestHome::new();
    let doc = h.doc("d.txt", &prose(4, 50));
    // Nothing registered: refused at enqueue, with one line.
    let err = h.fails(&["enqueue", s(&doc), "--model", "auto"], 3);
    assert!(err.contains("none is registered"), "{err}");
    let err = h.fails(&["enqueue", s(&doc), "--quality", "high"], 3);
    assert!(err.contains("--quality goes with --model auto"), "{err}");
    h.ok(&["models", "add", s(&tiny()), "--name", "tiny"]);
    h.ok(&["models", "add", s(&gemma()), "--name", "gemma"]);
    // A bad quality is a usage error (clap's exit 2), naming the choices.
    let out = h.run(&["enqueue", s(&doc), "--model", "auto", "--quality", "best"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("low, medium or high"));
    for q in ["high", "low"] {
        h.ok(&[
            "enqueue",
            s(&doc),
            "--model",
            "auto",
            "--quality",
            q,
            "--max-tokens",
            "4",
            "--custom-id",
            q,
        ]);
    }
    h.ok(&["worker", "--drain", "--n-ctx", "512", "--parallel", "2"]);
    let results = h.results(&[]);
    let by = |id: &str| {
        results
            .iter()
            .find(|r| r["custom_id"] == id)
            .unwrap_or_else(|| panic!("{id}: {results:?}"))
            .clone()
    };
    let (high, low) = (by("high"), by("low"));
    assert_eq!(high["state"], "succeeded", "{high}");
    assert_eq!(high["model"], "gemma", "{high}");
    assert_eq!(high["quality"], "high");
    let why = high["choice"].as_str().unwrap();
    assert!(
        why.starts_with("auto (high): gemma — the largest of 2 registered models that fits"),
        "{why}"
    );
    assert_eq!(low["model"], "tiny", "{low}");
    assert!(low["choice"]
        .as_str()
        .unwrap()
        .starts_with("auto (low): tiny"));
}

/// `yield_when_active`: where the person's idle time cannot be read (here: no logind, as in a
/// container or CI), the worker says so in one line and runs as it would without it; where it
/// can, no such line.
#[test]
fn yield_when_active_says_once_where_it_cannot_read_the_person_and_runs_on() {
    let h = TestHome::new();
    std::fs::write(
        h.path().join("config.toml"),
        "yield_when_active = \"5m\"\nyield_to = \"b1\"\n",
    )
    .unwrap();
    for i in 0..3 {
        let doc = h.doc(&format!("y{i}.txt"), &prose(i, 30));
        h.enqueue_tiny(&doc, "4");
    }
    let out = h.run(&["worker", "--drain", "--n-ctx", "512"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert_eq!(count(&h.status(), "succeeded"), 3);
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() }.to_string();
    let readable = std::process::Command::new("loginctl")
        .args(["show-user", &uid, "-p", "IdleHint"])
        .output()
        .is_ok_and(|o| o.status.success());
    let lines = said
        .lines()
        .filter(|l| l.starts_with("qwen3q: yield_when_active is not supported here"))
        .count();
    assert_eq!(lines, usize::from(!readable), "{said}");
}
