//! The worker loop and the runner on the fake engine: fast checks of the logic around
//! inference (the real llama.cpp path is covered by `tests/`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Exit, LiveStatus, RunSettings, Signals, Worker};
use crate::engine::fake::{FakeEngine, FakeLog};
use crate::job::{GenParams, JobId, JobSpec, JobState, ModelRef, StateKind, Task};
use crate::queue::prelude::*;
use crate::queue::sled::SledStore;
use crate::queue::test_support::temp_store;
use crate::queue::NewJob;

fn spec(custom_id: &str, task: Task, model: &str) -> JobSpec {
    JobSpec {
        custom_id: custom_id.into(),
        source: custom_id.into(),
        doc_sha256: format!("sha-{custom_id}"),
        doc_bytes: 0,
        task,
        system: None,
        model: ModelRef {
            name: "fake".into(),
            path: model.into(),
            template: None,
        },
        params: GenParams {
            max_tokens: 20,
            ..GenParams::qwen3_defaults(false)
        },
        priority: 0,
        not_before: None,
        max_attempts: 2,
        extra_json: None,
        constraint: None,
        fallback: Vec::new(),
        auto: None,
    }
}

fn enqueue(store: &SledStore, custom_id: &str, text: &str, task: Task, model: &str) -> JobId {
    let out = store
        .enqueue(
            &[NewJob {
                spec: spec(custom_id, task, model),
                text: text.into(),
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

/// `n` documents `d0`, `d1`, … ("text 0", …) to summarize on `m.gguf`.
fn enqueue_docs(store: &SledStore, n: usize) -> Vec<JobId> {
    (0..n)
        .map(|i| {
            enqueue(
                store,
                &format!("d{i}"),
                &format!("text {i}"),
                Task::Summarize,
                "m.gguf",
            )
        })
        .collect()
}

/// Record a measured load of `path` at (`n_ctx`, `n_seq`): `weights` plus `context` bytes.
fn measured(store: &SledStore, path: &str, n_ctx: u32, n_seq: u32, weights: u64, context: u64) {
    let record = crate::registry::MemoryRecord {
        n_ctx,
        n_seq,
        weights,
        context_allocated: context,
        context_resident: 0,
        at: 1,
    };
    store.record_memory(path, &record).unwrap();
}

fn settings(n_ctx: u32) -> RunSettings {
    RunSettings {
        n_ctx,
        margin: 8,
        ..RunSettings::default()
    }
}

fn now() -> u64 {
    5_000
}

/// A probe that always reads 16 GiB total with 12 GiB available.
fn plenty_of_memory() -> crate::monitor::ScriptedProbe {
    crate::monitor::ScriptedProbe::new(vec![memory(16 << 30, 12 << 30)])
}

use crate::monitor::plain_snapshot as memory;

/// A `--drain` worker over `store` with a fake engine of context 1000 and the fixed clock.
fn draining(store: &Arc<SledStore>) -> Worker {
    worker(store, FakeEngine::new(1000), now, true, &Signals::default())
}

/// A worker over `store` with the fake engine, a fixed clock and the given signals.
fn worker(
    store: &Arc<SledStore>,
    engine: FakeEngine,
    now: fn() -> u64,
    drain: bool,
    signals: &Signals,
) -> Worker {
    worker_with(store, engine, settings(1000), now, drain, signals)
}

fn worker_with(
    store: &Arc<SledStore>,
    engine: FakeEngine,
    settings: RunSettings,
    now: fn() -> u64,
    drain: bool,
    signals: &Signals,
) -> Worker {
    Worker {
        store: store.clone(),
        engine: Box::new(engine),
        probe: Box::new(plenty_of_memory()),
        budget: crate::scheduler::admission::Budget::from_total(16 << 30, false),
        settings,
        drain,
        signals: signals.clone(),
        status: Arc::new(Mutex::new(LiveStatus::default())),
        now,
        chat_witness: crate::supervise::ChatWitness::none(),
    }
}

/// Called before each engine step with its number; may stop the worker.
type StepHook = Box<dyn FnMut(u64, &Signals) + Send>;

/// Drain the queue with a fake engine of context `n_ctx` decoding `parallel` sequences
/// together; `on_step` may stop the worker. Returns how it ended and what the engine saw.
fn drain(
    store: &Arc<SledStore>,
    n_ctx: u32,
    parallel: u32,
    on_step: Option<StepHook>,
) -> (Exit, FakeLog) {
    let signals = Signals::default();
    let mut engine = FakeEngine::new(n_ctx);
    let log = engine.log.clone();
    if let Some(mut hook) = on_step {
        let s = signals.clone();
        engine.on_step = Some(Box::new(move |n| hook(n, &s)));
    }
    let settings = RunSettings {
        parallel,
        ..settings(n_ctx)
    };
    let exit = worker_with(store, engine, settings, now, true, &signals)
        .run()
        .unwrap();
    let log = std::mem::take(&mut *log.lock().unwrap());
    (exit, log)
}

/// A step hook that shuts the worker down once job `id` has `n` checkpoints.
fn stop_after_checkpoints(store: &Arc<SledStore>, id: JobId, n: usize) -> StepHook {
    let store = store.clone();
    Box::new(move |_, s: &Signals| {
        if store.checkpoints(id).unwrap().len() >= n {
            s.stop()
        }
    })
}

#[test]
fn a_long_document_is_chunked_checkpointed_and_reduced() {
    for parallel in [1, 4] {
        let (_d, store) = temp_store();
        let store = Arc::new(store);
        let text = "abcdefghij".repeat(60); // 600 "tokens" for the fake
        let id = enqueue(&store, "long", &text, Task::Summarize, "m.gguf");
        let (exit, log) = drain(&store, 400, parallel, None);
        assert_eq!(exit, Exit::Drained { delayed: 0 });
        let result = store.result(id).unwrap().expect("a result");
        assert!(result.chunks >= 3, "{result:?}");
        assert!(result.reduced);
        // One generation per chunk, then at least one reduce.
        assert!(log.prompts.len() > result.chunks as usize);
        assert!(log.prompts.last().unwrap().contains("Combine them"));
        assert_eq!(
            log.max_in_flight,
            (parallel as usize).min(result.chunks as usize),
            "chunks of one document decode together"
        );
        assert!(
            store.checkpoints(id).unwrap().is_empty(),
            "checkpoints go with success"
        );
        let events = store.events(id).unwrap();
        let chunk_events = events.iter().filter(|e| e.chunk.is_some()).count();
        assert_eq!(chunk_events, result.chunks as usize);
    }
}

#[test]
fn batched_results_equal_one_at_a_time_results() {
    let answers = |parallel: u32| {
        let (_d, store) = temp_store();
        let store = Arc::new(store);
        let ids: Vec<JobId> = (0..7)
            .map(|i| {
                let text = format!("document {i} ").repeat(20 + 13 * i);
                enqueue(&store, &format!("d{i}"), &text, Task::Summarize, "m.gguf")
            })
            .collect();
        let (_, log) = drain(&store, 300, parallel, None);
        let answers: Vec<String> = ids
            .iter()
            .map(|&id| {
                store
                    .result(id)
                    .unwrap()
                    .unwrap_or_else(|| panic!("{:?}", store.job(id).unwrap()))
                    .answer
            })
            .collect();
        (answers, log)
    };
    let (one, log1) = answers(1);
    let (four, log4) = answers(4);
    assert_eq!(one, four);
    assert_eq!(log1.max_in_flight, 1);
    assert_eq!(log4.max_in_flight, 4);
    // A finished sequence's slot is taken at once: some step runs a sequence that was not in
    // the step before while another sequence of that step goes on.
    let reused = log4.steps.windows(2).any(|w| {
        let (before, after) = (&w[0], &w[1]);
        after.iter().any(|t| !before.contains(t)) && after.iter().any(|t| before.contains(t))
    });
    assert!(reused, "no slot was refilled while others decoded");
}

#[test]
fn a_resumed_job_does_not_run_finished_chunks_again() {
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    // Not periodic, so that no two chunks have the same prompt.
    let text: String = (0..600u32)
        .map(|i| char::from(b'a' + ((i * 7 + i / 13) % 26) as u8))
        .collect();
    let id = enqueue(&store, "long", &text, Task::Keywords, "m.gguf");
    // First attempt: shut down once two chunks are checkpointed.
    let (exit, first) = drain(&store, 300, 1, Some(stop_after_checkpoints(&store, id, 2)));
    assert_eq!(exit, Exit::Shutdown);
    assert_eq!(store.checkpoints(id).unwrap().len(), 2);
    assert_eq!(store.job(id).unwrap().unwrap().state, JobState::Queued);

    let (_, second) = drain(&store, 300, 1, None);
    let result = store.result(id).unwrap().expect("a result");
    assert_eq!(
        second.prompts.len() as u32,
        result.chunks - 2,
        "only the missing chunks ran"
    );
    for p in &first.prompts[..2] {
        assert!(!second.prompts.contains(p), "chunk prompt ran twice");
    }
    assert!(!result.reduced, "keywords merge without a reduce prompt");
}

#[test]
fn a_batch_that_does_not_fit_halves_and_runs_its_steps_again() {
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    let ids = enqueue_docs(&store, 4);
    let signals = Signals::default();
    let mut engine = FakeEngine::new(1000);
    engine.fail_steps = 2;
    let status = Arc::new(Mutex::new(LiveStatus::default()));
    let mut w = worker_with(
        &store,
        engine,
        RunSettings {
            parallel: 4,
            ..settings(1000)
        },
        now,
        true,
        &signals,
    );
    w.status = status.clone();
    assert_eq!(w.run().unwrap(), Exit::Drained { delayed: 0 });
    for id in ids {
        let job = store.job(id).unwrap().unwrap();
        assert_eq!(job.state.kind(), StateKind::Succeeded, "{job:?}");
        assert_eq!(job.attempts, 1, "a memory failure costs no attempt");
    }
    assert_eq!(status.lock().unwrap().parallel, 1, "4 → 2 → 1");

    // At B = 1 a batch that still does not fit waits for memory instead of failing.
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    let id = enqueue(&store, "w", "text", Task::Summarize, "m.gguf");
    let mut engine = FakeEngine::new(1000);
    engine.fail_steps = 2;
    let w = worker(&store, engine, now, true, &Signals::default());
    // `--drain` tried it once more with every model unloaded; it failed again: the drain
    // says it does not fit (need unknown: a decode failed even alone).
    match w.run().unwrap() {
        Exit::NoMemory {
            jobs, need: None, ..
        } => assert_eq!(jobs, vec![id]),
        other => panic!("{other:?}"),
    }
    let job = store.job(id).unwrap().unwrap();
    assert_eq!((job.state.kind(), job.attempts), (StateKind::Queued, 0));

    // Once is enough: the drain's last try runs it.
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    let id = enqueue(&store, "w", "text", Task::Summarize, "m.gguf");
    let mut engine = FakeEngine::new(1000);
    engine.fail_steps = 1;
    let w = worker(&store, engine, now, true, &Signals::default());
    assert_eq!(w.run().unwrap(), Exit::Drained { delayed: 0 });
    let job = store.job(id).unwrap().unwrap();
    assert_eq!((job.state.kind(), job.attempts), (StateKind::Succeeded, 1));
    assert!(store
        .events(id)
        .unwrap()
        .iter()
        .any(|e| e.reason.contains("every model unloaded")));
}

#[test]
fn failures_back_off_then_die_and_the_worker_keeps_going() {
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    let bad = enqueue(&store, "bad", "this one fails", Task::Summarize, "m.gguf");
    let good = enqueue(&store, "good", "this one works", Task::Summarize, "m.gguf");
    let mut engine = FakeEngine::new(1000);
    engine.fail_on = Some("fails".into());
    let w = worker(&store, engine, now, true, &Signals::default());
    assert_eq!(w.run().unwrap(), Exit::Drained { delayed: 1 });
    match store.job(bad).unwrap().unwrap().state {
        JobState::Failed {
            attempt,
            next_attempt_at,
            ..
        } => {
            assert_eq!(attempt, 1);
            assert!(next_attempt_at >= now() + 24_000);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.job(good).unwrap().unwrap().state.kind(),
        StateKind::Succeeded
    );
    // After the backoff the second attempt fails too: max_attempts = 2, so Dead.
    let later = || 5_000 + 3_600_000;
    let mut engine = FakeEngine::new(1000);
    engine.fail_on = Some("fails".into());
    let w = worker(&store, engine, later, true, &Signals::default());
    assert_eq!(w.run().unwrap(), Exit::Drained { delayed: 0 });
    let job = store.job(bad).unwrap().unwrap();
    assert!(
        matches!(job.state, JobState::Dead { attempts: 2, .. }),
        "{job:?}"
    );
}

#[test]
fn recovery_puts_running_jobs_back_without_counting_an_attempt() {
    let (_d, store) = temp_store();
    let id = enqueue(&store, "a", "text", Task::Summarize, "m.gguf");
    store.claim(now(), 1000).unwrap().unwrap();
    assert_eq!(store.recover(now()).unwrap(), vec![id]);
    let job = store.job(id).unwrap().unwrap();
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.attempts, 0);
    assert!(store.ids_in_state(StateKind::Running).unwrap().is_empty());
}

#[test]
fn shutdown_releases_the_running_job_and_a_cancel_cancels_it() {
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    let id = enqueue(&store, "slow", &"x".repeat(50), Task::Summarize, "m.gguf");
    let mut engine = FakeEngine::new(1000);
    engine.token_delay = Duration::from_millis(20);
    let signals = Signals::default();
    let w = worker(&store, engine, now, false, &signals);
    let handle = std::thread::spawn(move || w.run());
    while store.job(id).unwrap().unwrap().state.kind() != StateKind::Running {
        std::thread::sleep(Duration::from_millis(5));
    }
    signals.request_cancel(id);
    while store.job(id).unwrap().unwrap().state.kind() == StateKind::Running {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        store.job(id).unwrap().unwrap().state.kind(),
        StateKind::Cancelled
    );
    signals.stop();
    assert_eq!(handle.join().unwrap().unwrap(), Exit::Shutdown);
}

#[test]
fn priorities_and_not_before_order_the_queue() {
    let (_d, store) = temp_store();
    let mut items = Vec::new();
    for (name, prio, nb) in [
        ("low", -1, None),
        ("high", 5, None),
        ("later", 9, Some(60_000u64)),
        ("mid", 0, None),
    ] {
        let mut s = spec(name, Task::Summarize, "m.gguf");
        s.priority = prio;
        s.not_before = nb;
        items.push(NewJob {
            spec: s,
            text: name.into(),
        });
    }
    store.enqueue(&items, false, 1_000).unwrap();
    let order: Vec<String> = std::iter::from_fn(|| store.claim(2_000, 1000).unwrap())
        .map(|j| j.spec.custom_id)
        .collect();
    assert_eq!(order, vec!["high", "mid", "low"]);
    assert_eq!(store.next_due().unwrap(), Some(60_000));
    let later = store.claim(60_000, 1000).unwrap().unwrap();
    assert_eq!(later.spec.custom_id, "later");
}

#[test]
fn checkpoints_of_another_context_size_are_not_mixed_in() {
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    let text: String = (0..600u32)
        .map(|i| char::from(b'a' + ((i * 11 + i / 7) % 26) as u8))
        .collect();
    let id = enqueue(&store, "long", &text, Task::Keywords, "m.gguf");
    drain(&store, 300, 1, Some(stop_after_checkpoints(&store, id, 1)));
    assert_eq!(store.checkpoints(id).unwrap().len(), 1);
    // Restarted with a larger context: the old chunk does not line up, so all run anew.
    let (_, log) = drain(&store, 400, 1, None);
    let result = store.result(id).unwrap().expect("a result");
    assert_eq!(log.prompts.len() as u32, result.chunks);
    assert!(store
        .events(id)
        .unwrap()
        .iter()
        .any(|e| e.reason.contains("chunk plan changed")));
}

#[test]
fn a_prompt_that_cannot_fit_is_dead_at_once() {
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    // A chat job is not chunked: a conversation longer than the context cannot run.
    let messages = vec![crate::job::ChatMessage {
        role: "user".into(),
        content: "x".repeat(500),
    }];
    let (text, turns) = crate::job::chat_document(&messages);
    let id = enqueue(&store, "chat", &text, Task::Chat { turns }, "m.gguf");
    let w = worker(&store, FakeEngine::new(100), now, true, &Signals::default());
    assert_eq!(w.run().unwrap(), Exit::Drained { delayed: 0 });
    let job = store.job(id).unwrap().unwrap();
    match job.state {
        JobState::Dead { error, attempts } => {
            assert_eq!(attempts, 1);
            assert!(error.contains("context"), "{error}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_chat_whose_document_does_not_match_its_turns_is_dead_at_once() {
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    let turns = vec![crate::job::Turn {
        role: "user".into(),
        bytes: 40,
    }];
    let id = enqueue(
        &store,
        "chat",
        "user: too short\n",
        Task::Chat { turns },
        "m.gguf",
    );
    let w = worker(
        &store,
        FakeEngine::new(1000),
        now,
        true,
        &Signals::default(),
    );
    assert_eq!(w.run().unwrap(), Exit::Drained { delayed: 0 });
    match store.job(id).unwrap().unwrap().state {
        JobState::Dead { error, attempts } => {
            assert_eq!(attempts, 1);
            assert!(error.contains("does not match its turns"), "{error}");
        }
        other => panic!("{other:?}"),
    }
}

/// A damaged stored document (in sled's parts; a file's damage is tested on the binary) is its
/// job's death, not the worker's: the next job runs.
#[test]
fn a_job_whose_stored_document_is_damaged_is_dead_and_the_rest_run() {
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    let ids = enqueue_docs(&store, 2);
    store.damage_document_for_tests(ids[0]);
    let w = worker(
        &store,
        FakeEngine::new(1000),
        now,
        true,
        &Signals::default(),
    );
    assert_eq!(w.run().unwrap(), Exit::Drained { delayed: 0 });
    match store.job(ids[0]).unwrap().unwrap().state {
        JobState::Dead { error, .. } => {
            assert!(error.contains("stored document cannot be read"), "{error}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.job(ids[1]).unwrap().unwrap().state,
        JobState::Succeeded { .. }
    ));
}

fn model(name: &str) -> crate::job::ModelRef {
    crate::job::ModelRef {
        name: name.into(),
        path: format!("{name}.gguf"),
        template: None,
    }
}

/// A fake engine under a budget of 100 bytes with models of the given sizes.
fn budget_engine(sizes: &[(&str, u64)]) -> FakeEngine {
    let mut e = FakeEngine::with_limits(
        1000,
        crate::engine::lru::Limits {
            budget_bytes: 100,
            max_models: 4,
            keep_alive_ms: 300_000,
        },
    );
    for (name, bytes) in sizes {
        e.model_bytes.insert(format!("{name}.gguf"), *bytes);
    }
    e
}

#[test]
fn the_least_recently_used_idle_model_is_evicted_for_the_next() {
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    for (i, m) in ["a", "b", "a"].iter().enumerate() {
        let mut s = spec(&format!("j{i}"), Task::Summarize, &format!("{m}.gguf"));
        s.model = model(m);
        s.priority = 10 - i as i32; // claimed in this order
        store
            .enqueue(
                &[NewJob {
                    spec: s,
                    text: format!("text {i}"),
                }],
                true,
                1_000,
            )
            .unwrap();
    }
    let engine = budget_engine(&[("a", 60), ("b", 60)]);
    let log = engine.log.clone();
    let w = worker(&store, engine, now, true, &Signals::default());
    assert_eq!(w.run().unwrap(), Exit::Drained { delayed: 0 });
    // a and b cannot both fit in 100 bytes: each load evicts the other (idle) one.
    assert_eq!(log.lock().unwrap().loads, ["a", "b", "a"]);
    assert_eq!(store.ids_in_state(StateKind::Succeeded).unwrap().len(), 3);
}

#[test]
fn a_model_that_cannot_fit_falls_back_or_waits_and_never_fails_for_memory() {
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    let mut with_fallback = spec("fb", Task::Summarize, "big.gguf");
    with_fallback.model = model("big");
    with_fallback.fallback = vec![model("small")];
    let mut alone = spec("alone", Task::Summarize, "big.gguf");
    alone.model = model("big");
    store
        .enqueue(
            &[
                NewJob {
                    spec: with_fallback,
                    text: "one".into(),
                },
                NewJob {
                    spec: alone,
                    text: "two".into(),
                },
            ],
            false,
            1_000,
        )
        .unwrap();
    let w = worker(
        &store,
        budget_engine(&[("big", 150), ("small", 50)]),
        now,
        true,
        &Signals::default(),
    );
    assert_eq!(w.run().unwrap(), Exit::Drained { delayed: 0 });
    let fb = store
        .result(JobId(1))
        .unwrap()
        .unwrap_or_else(|| panic!("{:?}", store.job(JobId(1)).unwrap()));
    assert_eq!(
        fb.model.name, "small",
        "the result records the model that ran"
    );
    // No configuration of `big` fits 100 bytes and it has no fallback: dead, saying why.
    match store.job(JobId(2)).unwrap().unwrap().state {
        JobState::Dead { error, .. } => assert!(error.contains("model budget"), "{error}"),
        other => panic!("{other:?}"),
    }

    // A load that fails for memory now (not for the budget) waits, costing no attempt.
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    let id = enqueue(&store, "w", "text", Task::Summarize, "m.gguf");
    let mut engine = FakeEngine::new(1000);
    engine.max_seqs_that_fit = Some(0);
    let w = worker(&store, engine, now, true, &Signals::default());
    // `--drain` does not end as if nothing were left: with every model unloaded the job was
    // tried once more, then the drain says it does not fit.
    match w.run().unwrap() {
        Exit::NoMemory {
            jobs,
            need: None,
            delayed: 0,
            ..
        } => assert_eq!(jobs, vec![id]),
        other => panic!("{other:?}"),
    }
    let job = store.job(id).unwrap().unwrap();
    assert_eq!((job.state.kind(), job.attempts), (StateKind::Queued, 0));
    assert_eq!(job.spec.not_before, Some(now() + 60_000));
    assert!(store
        .events(id)
        .unwrap()
        .iter()
        .any(|e| e.reason.contains("waiting for memory")));
}

#[test]
fn a_job_that_cannot_fit_waits_and_is_reported_then_runs_once_memory_frees() {
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    let id = enqueue(&store, "big", "text", Task::Summarize, "big.gguf");
    // An earlier load measured 2 GiB for this model and shape.
    measured(&store, "big.gguf", 1000, 1, 1 << 30, 1 << 30);
    // 16 GiB, 3 GiB available, a 2 GiB reserve: 1 GiB free for it.
    let status = Arc::new(Mutex::new(LiveStatus::default()));
    let mut w = draining(&store);
    w.probe = Box::new(crate::monitor::ScriptedProbe::new(vec![memory(
        16 << 30,
        3 << 30,
    )]));
    w.status = status.clone();
    assert_eq!(
        w.run().unwrap(),
        Exit::NoMemory {
            jobs: vec![id],
            need: Some(2 << 30),
            free: 1 << 30,
            delayed: 0
        }
    );
    let job = store.job(id).unwrap().unwrap();
    assert_eq!((job.state.kind(), job.attempts), (StateKind::Queued, 0));
    let wait = status
        .lock()
        .unwrap()
        .memory_wait
        .clone()
        .expect("reported");
    assert_eq!(wait.why, "waiting for memory: needs 2.0 GiB, 1.0 GiB free");
    assert!(store
        .events(id)
        .unwrap()
        .iter()
        .any(|e| e.reason.contains("needs 2.0 GiB")));

    // A minute later memory has freed: it runs.
    let later = || 5_000 + 61_000;
    let w = worker(
        &store,
        FakeEngine::new(1000),
        later,
        true,
        &Signals::default(),
    );
    assert_eq!(w.run().unwrap(), Exit::Drained { delayed: 0 });
    assert_eq!(
        store.job(id).unwrap().unwrap().state.kind(),
        StateKind::Succeeded
    );
}

#[test]
fn a_job_waiting_for_memory_goes_again_as_soon_as_memory_frees_not_a_minute_later() {
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    let id = enqueue(&store, "big", "text", Task::Summarize, "big.gguf");
    measured(&store, "big.gguf", 1000, 1, 1 << 30, 1 << 30);
    // Memory pressure is read once (at the start), then never again within the test.
    let settings = RunSettings {
        pressure_interval: Duration::from_secs(3600),
        ..settings(1000)
    };
    let mut w = worker_with(
        &store,
        FakeEngine::new(1000),
        settings,
        now,
        true,
        &Signals::default(),
    );
    // The pressure watch and the gate read 1 GiB free beyond the reserve (the job needs 2);
    // the next reading, in the idle step, 10 GiB: the job is woken and runs in the same
    // drain, at the same time.
    w.probe = Box::new(crate::monitor::ScriptedProbe::new(vec![
        memory(16 << 30, 3 << 30),
        memory(16 << 30, 3 << 30),
        memory(16 << 30, 12 << 30),
    ]));
    assert_eq!(w.run().unwrap(), Exit::Drained { delayed: 0 });
    assert_eq!(
        store.job(id).unwrap().unwrap().state.kind(),
        StateKind::Succeeded
    );
    let reasons: Vec<String> = store
        .events(id)
        .unwrap()
        .into_iter()
        .map(|e| e.reason)
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("needs 2.0 GiB"))
            && reasons
                .iter()
                .any(|r| r.starts_with("memory freed (10.0 GiB free)")),
        "{reasons:?}"
    );
}

#[test]
fn critical_pressure_sheds_the_batch_then_pauses_claiming_and_recovers() {
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    let ids: Vec<JobId> = (0..6)
        .map(|i| {
            enqueue(
                &store,
                &format!("d{i}"),
                &"x".repeat(40 + i),
                Task::Summarize,
                "m.gguf",
            )
        })
        .collect();
    let mut engine = FakeEngine::new(1000);
    engine.token_delay = Duration::from_millis(2);
    let status = Arc::new(Mutex::new(LiveStatus::default()));
    let settings = RunSettings {
        parallel: 4,
        pressure_interval: Duration::ZERO,
        shed_interval: Duration::ZERO,
        ..settings(1000)
    };
    let mut w = worker_with(&store, engine, settings, now, true, &Signals::default());
    // The gate reads first (plenty), then pressure is critical for a while, then normal.
    let mut readings = vec![memory(16 << 30, 12 << 30)];
    readings.extend(std::iter::repeat_n(memory(16 << 30, 1 << 29), 40));
    readings.push(memory(16 << 30, 12 << 30));
    w.probe = Box::new(crate::monitor::ScriptedProbe::new(readings));
    w.status = status.clone();
    assert_eq!(w.run().unwrap(), Exit::Drained { delayed: 0 });
    let sheds: Vec<_> = status.lock().unwrap().sheds.iter().map(|s| s.1).collect();
    use crate::scheduler::admission::Shed;
    assert_eq!(
        sheds,
        [Shed::ShrinkBatch, Shed::ShrinkBatch, Shed::PauseClaiming],
        "4 → 2 → 1, no idle model to unload, then claiming pauses"
    );
    for id in ids {
        let job = store.job(id).unwrap().unwrap();
        assert_eq!((job.state.kind(), job.attempts), (StateKind::Succeeded, 1));
    }
}

#[test]
fn jobs_are_claimed_only_inside_the_schedule_window() {
    use chrono::{TimeZone, Timelike};
    let hour = chrono::Local
        .timestamp_millis_opt(now() as i64)
        .unwrap()
        .hour();
    let window = |opens: u32, closes: u32| {
        crate::schedule::Window::parse(
            &format!("0 {} * * *", opens % 24),
            &format!("{:02}:00", closes % 24),
        )
        .unwrap()
    };
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    let id = enqueue(&store, "w", "text", Task::Summarize, "m.gguf");
    // A window that opens in two hours: nothing is claimed, the job stays queued.
    let closed = RunSettings {
        window: Some(window(hour + 2, hour + 3)),
        ..settings(1000)
    };
    let w = worker_with(
        &store,
        FakeEngine::new(1000),
        closed,
        now,
        true,
        &Signals::default(),
    );
    assert_eq!(w.run().unwrap(), Exit::Drained { delayed: 0 });
    assert_eq!(store.job(id).unwrap().unwrap().state, JobState::Queued);
    // A window that opened an hour ago and closes in an hour: it runs.
    let open = RunSettings {
        window: Some(window(hour + 23, hour + 1)),
        ..settings(1000)
    };
    let w = worker_with(
        &store,
        FakeEngine::new(1000),
        open,
        now,
        true,
        &Signals::default(),
    );
    assert_eq!(w.run().unwrap(), Exit::Drained { delayed: 0 });
    assert_eq!(
        store.job(id).unwrap().unwrap().state.kind(),
        StateKind::Succeeded
    );
}

#[test]
fn the_adaptive_batch_grows_while_throughput_improves_then_halves_on_a_memory_jump() {
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    for i in 0..150 {
        enqueue(
            &store,
            &format!("d{i}"),
            &format!("document {i}"),
            Task::Summarize,
            "m.gguf",
        );
    }
    // Measured loads: B = 1–3 take 10 GiB each, B = 4–6 41 GiB (1 GiB of weights). At 40 %
    // of 100 GiB in use, B = 3 is the largest start that stays under the 80 % warning; larger
    // B still pass the gate (40 GiB of context ≤ 47.5 GiB free beyond the reserve).
    for n_seq in 1..=6u32 {
        let total: u64 = if n_seq <= 3 { 10 * n_seq as u64 } else { 41 };
        measured(&store, "m.gguf", 1000, n_seq, 1 << 30, (total - 1) << 30);
    }
    // Each step takes 5 ms of the worker's clock whatever B (the engine advances it: no
    // sleep, so a busy machine changes nothing): throughput grows with B.
    static CLOCK: AtomicU64 = AtomicU64::new(1_000_000);
    fn clock() -> u64 {
        CLOCK.load(Ordering::SeqCst)
    }
    let mut engine = FakeEngine::new(1000);
    engine.on_step = Some(Box::new(|_| {
        CLOCK.fetch_add(5, Ordering::SeqCst);
    }));
    let log = engine.log.clone();
    // Readings over 300 ms (60 steps) each: B + 1 is 17–33 % faster.
    let settings = RunSettings {
        parallel: 6,
        adaptive: true,
        adapt_interval: Duration::from_millis(300),
        pressure_interval: Duration::from_secs(3600),
        ..settings(1000)
    };
    let mut w = worker_with(&store, engine, settings, clock, true, &Signals::default());
    // Memory is steady at 40 % until the controller has reached B = 6, then jumps to 60 %
    // (keyed to the loads, not to a count of readings, which depends on timing).
    struct JumpAtPeak(Arc<Mutex<crate::engine::fake::FakeLog>>);
    impl crate::monitor::MemoryProbe for JumpAtPeak {
        fn sample(&mut self, now: crate::job::Millis) -> crate::monitor::MemorySnapshot {
            let peaked = self.0.lock().unwrap().shapes.contains(&6);
            let mut s = memory(100 << 30, if peaked { 40 << 30 } else { 60 << 30 });
            s.at = now;
            s
        }
    }
    w.probe = Box::new(JumpAtPeak(log.clone()));
    // No split of the budget here: the records, not the shares, bound B.
    w.budget.buffer_share = 1.0;
    assert_eq!(w.run().unwrap(), Exit::Drained { delayed: 0 });
    let shapes = log.lock().unwrap().shapes.clone();
    assert_eq!(shapes[0], 3, "starts at what memory allows: {shapes:?}");
    let peak = shapes
        .iter()
        .position(|&b| b == 6)
        .unwrap_or_else(|| panic!("grows to the ceiling: {shapes:?}"));
    assert!(
        shapes[..=peak].windows(2).all(|w| w[1] == w[0] + 1),
        "one at a time: {shapes:?}"
    );
    assert!(
        shapes[peak..].contains(&3),
        "halves after the jump: {shapes:?}"
    );
    let counts = store.counts().unwrap();
    assert_eq!(counts.succeeded, 150, "{counts:?}");
}

mod chats;
mod choice;

#[test]
fn a_new_batch_at_the_shape_of_the_context_still_held_needs_no_more_memory() {
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    let ids: Vec<JobId> = (0..3)
        .map(|i| enqueue(&store, &format!("d{i}"), "text", Task::Summarize, "m.gguf"))
        .collect();
    // 1 GiB of weights and 2 GiB of context (measured). 16 GiB with a 2 GiB reserve: 4 GiB
    // free before the load, 1.5 GiB once the model is loaded (its weights and context in use).
    measured(&store, "m.gguf", 1000, 1, 1 << 30, 2 << 30);
    let engine = FakeEngine::new(1000);
    let log = engine.log.clone();
    let mut w = worker(&store, engine, now, true, &Signals::default());
    struct LessOnceLoaded(Arc<Mutex<crate::engine::fake::FakeLog>>);
    impl crate::monitor::MemoryProbe for LessOnceLoaded {
        fn sample(&mut self, now: crate::job::Millis) -> crate::monitor::MemorySnapshot {
            let loaded = !self.0.lock().unwrap().loads.is_empty();
            let mut s = memory(16 << 30, if loaded { 7 << 29 } else { 6 << 30 });
            s.at = now;
            s
        }
    }
    w.probe = Box::new(LessOnceLoaded(log.clone()));
    // Each job is a batch of its own (B = 1): the next one finds the context in place.
    assert_eq!(w.run().unwrap(), Exit::Drained { delayed: 0 });
    for id in ids {
        assert_eq!(
            store.job(id).unwrap().unwrap().state.kind(),
            StateKind::Succeeded
        );
        assert!(
            !store
                .events(id)
                .unwrap()
                .iter()
                .any(|e| e.reason.contains("waiting for memory")),
            "{:?}",
            store.events(id).unwrap()
        );
    }
    assert_eq!(log.lock().unwrap().loads.len(), 1);
}

#[test]
fn a_model_llama_cpp_refuses_with_memory_enough_fails_its_attempts_instead_of_waiting() {
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    let id = enqueue(&store, "w", "text", Task::Summarize, "m.gguf");
    // Every load fails, though the gate finds plenty of memory at every shape.
    let mut engine = FakeEngine::new(1000);
    engine.fail_loads = 100;
    let w = worker(&store, engine, now, true, &Signals::default());
    assert_eq!(w.run().unwrap(), Exit::Drained { delayed: 1 });
    let job = store.job(id).unwrap().unwrap();
    match &job.state {
        JobState::Failed { error, attempt, .. } => {
            assert_eq!(*attempt, 1);
            assert!(
                error.contains("refused") && error.contains("memory enough"),
                "{error}"
            );
        }
        other => panic!("a failed attempt, not a wait for memory: {other:?}"),
    }
    // Its attempts run out like any failure's: dead (max_attempts = 2 here).
    let later = || 5_000 + 3_600_000;
    let mut engine = FakeEngine::new(1000);
    engine.fail_loads = 100;
    let w = worker(&store, engine, later, true, &Signals::default());
    assert_eq!(w.run().unwrap(), Exit::Drained { delayed: 0 });
    assert!(matches!(
        store.job(id).unwrap().unwrap().state,
        JobState::Dead { attempts: 2, .. }
    ));
}

#[test]
fn suspects_of_a_crash_run_alone_first_then_the_rest_together() {
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    let ids = enqueue_docs(&store, 4);
    // A worker had jobs 1 and 2 in flight when it crashed: both are suspects.
    store.claim(now(), 60_000).unwrap().unwrap();
    store.claim(now(), 60_000).unwrap().unwrap();
    store.record_crash(false, "SIGSEGV", now(), 3).unwrap();
    assert_eq!(store.suspects().unwrap(), vec![ids[0], ids[1]]);
    let engine = FakeEngine::new(1000);
    let log = engine.log.clone();
    let settings = RunSettings {
        parallel: 4,
        ..settings(1000)
    };
    let w = worker_with(&store, engine, settings, now, true, &Signals::default());
    assert_eq!(w.run().unwrap(), Exit::Drained { delayed: 0 });
    for id in &ids {
        assert_eq!(
            store.job(*id).unwrap().unwrap().state.kind(),
            StateKind::Succeeded
        );
        assert!(store.crash_record(*id).unwrap().is_none(), "cleared");
    }
    let log = log.lock().unwrap();
    // The suspects alone in a context of one sequence (the second reuses the first's), then
    // the other two together at B = 4.
    assert_eq!(log.shapes, [1, 4], "{:?}", log.shapes);
    let first_prompts: Vec<&String> = log.prompts.iter().take(2).collect();
    assert!(
        first_prompts[0].contains("text 0") && first_prompts[1].contains("text 1"),
        "{first_prompts:?}"
    );
}

#[test]
fn a_damaged_stored_job_is_quarantined_and_the_worker_runs_the_rest() {
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    let ids = enqueue_docs(&store, 3);
    // The middle job's value is damaged, and it was running when a worker died: recovery,
    // claiming and the loop go on around it.
    store.claim(now(), 60_000).unwrap().unwrap();
    let claimed = store.claim(now(), 60_000).unwrap().unwrap();
    assert_eq!(claimed.id, ids[1]);
    store.damage_job_for_tests(ids[1]);
    let w = draining(&store);
    assert_eq!(w.run().unwrap(), Exit::Drained { delayed: 0 });
    let kinds: Vec<StateKind> = ids
        .iter()
        .map(|id| store.job(*id).unwrap().unwrap().state.kind())
        .collect();
    assert_eq!(
        kinds,
        [StateKind::Succeeded, StateKind::Dead, StateKind::Succeeded]
    );
    assert_eq!(store.quarantined_count(), 1);
}
