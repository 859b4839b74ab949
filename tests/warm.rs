//! A warm start: after a `kill -9` the worker loads the model its last batch decoded with while
//! it opens the store; not when the hint names a file that is gone, and not after a runner that
//! died by a signal soon after its start.

use std::time::Duration;

use crate::common::*;

const WARM: &str = "warm start: the model loaded while the store opened";
const COLD: &str = "cold start: the runner before this one died soon after its start";

fn runner_pid(h: &TestHome) -> Option<u64> {
    h.status()["worker"]["runner_pid"].as_u64()
}

#[test]
fn after_kill_9_the_last_model_loads_while_the_store_opens_and_only_then() {
    let h = TestHome::new();
    for i in 0..6 {
        h.doc(&format!("d{i}.txt"), &prose(30 + i, 60));
    }
    h.enqueue_tiny(&h.path().join("docs"), "48");
    let hint = h.path().join("warm.json");
    let mut worker = h.spawn_worker(&[]);
    h.wait_for_worker(&mut worker);
    wait_until(Duration::from_secs(60), "the hint", || hint.exists());
    let text = std::fs::read_to_string(&hint).unwrap();
    assert!(text.contains("qwen3-tiny.gguf"), "{text}");
    kill_9_worker(&h, &mut worker);

    let out = h.run(&["worker", "--drain"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains(WARM), "{log}");
    assert!(
        log.contains("first token since the worker started"),
        "{log}"
    );
    // The claim found the model loaded: it was not loaded a second time.
    assert_eq!(log.matches("model loaded model=").count(), 1, "{log}");
    assert_eq!(count(&h.status(), "succeeded"), 6);

    // A hint naming a file that is gone: a cold start, and the job runs.
    std::fs::write(
        &hint,
        r#"{"model":{"name":"gone","path":"/nonexistent/gone.gguf","template":null},"n_ctx":512,"n_seq":1}"#,
    )
    .unwrap();
    h.enqueue_tiny(&h.doc("e.txt", &prose(50, 30)), "4");
    let out = h.run(&["worker", "--drain"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains(WARM), "{log}");
    assert_eq!(count(&h.status(), "succeeded"), 7);
}

#[test]
fn a_runner_killed_soon_after_its_start_is_followed_by_a_cold_one() {
    let h = TestHome::new();
    h.enqueue_tiny(&h.doc("a.txt", &prose(70, 60)), "400");
    // A hint of the tiny model, as an earlier worker would have left it.
    std::fs::write(
        h.path().join("warm.json"),
        format!(
            r#"{{"model":{{"name":"qwen3-tiny","path":"{}","template":null}},"n_ctx":4096,"n_seq":4}}"#,
            s(&tiny())
        ),
    )
    .unwrap();
    let mut worker = h.spawn_worker(&[]);
    h.wait_for_worker(&mut worker);
    let first = runner(&h);
    // Killed within seconds of its start: the supervisor starts the next one cold.
    kill("KILL", first);
    wait_until(Duration::from_secs(30), "a new runner", || {
        runner_pid(&h).is_some_and(|p| p != first)
    });
    sigterm(&worker.0);
    wait_exit(&mut worker.0, Duration::from_secs(30)).expect("the worker exits");
    let log = worker.log();
    assert_eq!(log.matches(WARM).count(), 1, "the first runner only: {log}");
    assert_eq!(log.matches(COLD).count(), 1, "{log}");
}
