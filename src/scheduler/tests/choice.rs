//! `--model auto` picks and the adaptive batch size's start, on the fake engine.

use super::*;
use crate::job::Quality;
use crate::registry::{Calibration, CurvePoint, RegisteredModel};

const GIB: u64 = 1 << 30;

/// Register `name` (at `/m/{name}.gguf`) with a measured load of `total` bytes for the shape
/// the worker will ask for.
fn register(store: &SledStore, name: &str, parameters: u64, total: u64, shape: (u32, u32)) {
    let path = format!("/m/{name}.gguf");
    store
        .add_model(&RegisteredModel {
            name: name.into(),
            path: path.clone(),
            parts: vec![],
            template: None,
            architecture: "qwen3".into(),
            parameters,
            quantization: "Q4_K_M".into(),
            file_bytes: parameters * 5 / 8,
            added: 0,
        })
        .unwrap();
    let weights = parameters * 5 / 8;
    measured(store, &path, shape.0, shape.1, weights, total - weights);
}

fn enqueue_auto(store: &SledStore, name: &str, quality: Quality) -> JobId {
    let mut s = spec(name, Task::Summarize, "");
    s.model = ModelRef::auto();
    s.auto = Some(quality);
    let out = store
        .enqueue(
            &[NewJob {
                spec: s,
                text: format!("text of {name}"),
            }],
            false,
            1_000,
        )
        .unwrap();
    match out[0] {
        crate::queue::EnqueueOutcome::Queued(id) => id,
        other => panic!("{other:?}"),
    }
}

#[test]
fn auto_takes_the_largest_model_that_fits_now_and_says_why() {
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    let shape = (1000, 1);
    register(&store, "small", 1_000_000_000, GIB, shape);
    register(&store, "big", 8_000_000_000, 6 * GIB, shape);
    let scarce = enqueue_auto(&store, "scarce", Quality::High);
    // 16 GiB with 4 available: 2 beyond the reserve. Only "small" fits.
    let mut w = draining(&store);
    w.probe = Box::new(crate::monitor::ScriptedProbe::new(vec![memory(
        16 * GIB,
        4 * GIB,
    )]));
    assert_eq!(w.run().unwrap(), Exit::Drained { delayed: 0 });
    let r = store.result(scarce).unwrap().expect("succeeded");
    assert_eq!(r.model.name, "small");
    let why = r.choice.unwrap();
    assert!(
        why.starts_with("auto (high): small — the largest of 2 registered models that fits: needs 1.0 GiB, 2.0 GiB free"),
        "{why}"
    );
    // With plenty of memory the same request takes "big"; low takes "small".
    let plenty = enqueue_auto(&store, "plenty", Quality::High);
    let low = enqueue_auto(&store, "low", Quality::Low);
    let engine = FakeEngine::new(1000);
    let log = engine.log.clone();
    let w = worker(&store, engine, now, true, &Signals::default());
    assert_eq!(w.run().unwrap(), Exit::Drained { delayed: 0 });
    assert_eq!(store.result(plenty).unwrap().unwrap().model.name, "big");
    assert_eq!(store.result(low).unwrap().unwrap().model.name, "small");
    assert_eq!(log.lock().unwrap().loads, vec!["big", "small"]);
}

#[test]
fn auto_waits_when_no_model_fits_and_fails_with_an_empty_registry() {
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    let id = enqueue_auto(&store, "nothing", Quality::Low);
    let w = draining(&store);
    w.run().unwrap();
    let job = store.job(id).unwrap().unwrap();
    assert_eq!(job.state.kind(), StateKind::Failed, "{job:?}");
    let events = store.events(id).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.reason.contains("no model is registered")),
        "{events:?}"
    );

    let (_d, store) = temp_store();
    let store = Arc::new(store);
    register(&store, "big", 8_000_000_000, 6 * GIB, (1000, 1));
    let id = enqueue_auto(&store, "waits", Quality::Low);
    let status = Arc::new(Mutex::new(LiveStatus::default()));
    let mut w = draining(&store);
    w.status = status.clone();
    w.probe = Box::new(crate::monitor::ScriptedProbe::new(vec![memory(
        16 * GIB,
        4 * GIB,
    )]));
    assert!(
        matches!(w.run().unwrap(), Exit::NoMemory { ref jobs, .. } if jobs == &vec![id]),
        "nothing fits: the drain says so"
    );
    let job = store.job(id).unwrap().unwrap();
    assert_eq!((job.state.kind(), job.attempts), (StateKind::Queued, 0));
    let wait = status
        .lock()
        .unwrap()
        .memory_wait
        .clone()
        .expect("reported");
    assert_eq!(wait.why, "waiting for memory: needs 6.0 GiB, 2.0 GiB free");
}

#[test]
fn the_adaptive_batch_starts_at_the_calibrated_knee_of_each_model() {
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    let point = |n_seq: u32, tokens_per_sec: f64| CurvePoint {
        n_seq,
        tokens_per_sec,
        memory: 0,
    };
    store
        .record_calibration(
            "cal.gguf",
            &Calibration {
                n_ctx: 1000,
                // 90 % of the best (100) is first reached at B = 5.
                points: vec![
                    point(1, 30.0),
                    point(2, 55.0),
                    point(5, 95.0),
                    point(8, 100.0),
                ],
                at: 0,
            },
        )
        .unwrap();
    // "plain" has no calibration; its measured loads take 1 GiB of weights and 2 GiB of
    // context a sequence less 1. With 4 of 16 GiB in use B = 4 (8 GiB) would stay under the
    // 80 % warning, but the buffers' share (a quarter of 14 GiB: 3.5 GiB) holds B = 2's 3 GiB
    // of context, not B = 3's 5 GiB.
    for n_seq in 1..=6u32 {
        measured(
            &store,
            "plain.gguf",
            1000,
            n_seq,
            1 << 30,
            (2 * n_seq as u64 - 1) << 30,
        );
    }
    enqueue(&store, "a", "text a", Task::Summarize, "cal.gguf");
    enqueue(&store, "b", "text b", Task::Summarize, "plain.gguf");
    let engine = FakeEngine::new(1000);
    let log = engine.log.clone();
    let settings = RunSettings {
        parallel: 6,
        adaptive: true,
        ..settings(1000)
    };
    let w = worker_with(&store, engine, settings, now, true, &Signals::default());
    assert_eq!(w.run().unwrap(), Exit::Drained { delayed: 0 });
    // "cal" starts at its knee; "plain" (no calibration) at what memory allows.
    assert_eq!(log.lock().unwrap().shapes, vec![5, 2]);
}
