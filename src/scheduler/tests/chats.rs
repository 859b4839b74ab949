//! Interactive chats beside batch work, on the fake engine: a chat takes a slot (the youngest
//! batch sequence's when all are busy) or makes the batch yield for its model; the batch loses
//! nothing and counts no attempt. (The real llama.cpp path: `tests/interactive.rs`.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::engine::reasoning::Piece;
use crate::scheduler::chat::{ChatEvent, ChatRequest, FailureKind};

fn chat(model_path: &str, text: &str, stream: bool, stop: &[&str]) -> (ChatRequest, Receiver) {
    let (reply, rx) = tokio::sync::mpsc::unbounded_channel();
    let request = ChatRequest {
        model: model(model_path),
        messages: vec![crate::job::ChatMessage {
            role: "user".into(),
            content: text.into(),
        }],
        sampling: crate::engine::Sampling {
            max_tokens: 40,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            seed: 1,
        },
        grammar: None,
        stop: stop.iter().map(|s| s.to_string()).collect(),
        thinking: false,
        stream,
        received: Instant::now(),
        reply,
        ticket: None,
    };
    (request, rx)
}

type Receiver = tokio::sync::mpsc::UnboundedReceiver<ChatEvent>;

/// The model of the jobs `spec` makes (name "fake").
fn model(path: &str) -> ModelRef {
    ModelRef {
        name: "fake".into(),
        path: path.into(),
        template: None,
    }
}

/// Every event of a chat, until its last (or a timeout: a test failure).
fn events(rx: &mut Receiver) -> Vec<ChatEvent> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(e) => {
                let last = !matches!(e, ChatEvent::Delta(_));
                out.push(e);
                if last {
                    return out;
                }
            }
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                assert!(Instant::now() < deadline, "no answer: {out:?}");
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("the loop dropped the chat: {e:?} after {out:?}"),
        }
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Answers of a drain of `n` documents without any chat, by custom id.
fn answers_alone(n: usize, parallel: u32) -> Vec<(String, String)> {
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    enqueue_docs(&store, n);
    drain(&store, 1000, parallel, None);
    answers(&store)
}

fn answers(store: &SledStore) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = (store.ids_in_state(StateKind::Succeeded).unwrap())
        .into_iter()
        .map(|id| {
            let job = store.job(id).unwrap().unwrap();
            assert_eq!(
                job.attempts, 1,
                "{} counted another attempt",
                job.spec.custom_id
            );
            (
                job.spec.custom_id,
                store.result(id).unwrap().unwrap().answer,
            )
        })
        .collect();
    out.sort();
    out
}

/// A worker over `store` (fake engine, a slow token so that chats arrive mid-batch) running
/// on its own thread; its signals and status.
fn running(
    store: &Arc<SledStore>,
    parallel: u32,
) -> (
    Signals,
    Arc<Mutex<LiveStatus>>,
    std::thread::JoinHandle<Result<Exit, crate::queue::StoreError>>,
) {
    let mut engine = FakeEngine::new(1000);
    engine.token_delay = Duration::from_millis(3);
    let signals = Signals::default();
    let settings = RunSettings {
        parallel,
        ..settings(1000)
    };
    let w = worker_with(store, engine, settings, now, false, &signals);
    let status = w.status.clone();
    (signals, status, std::thread::spawn(move || w.run()))
}

#[test]
fn a_chat_takes_the_youngest_slot_and_the_batch_loses_nothing_and_counts_no_attempt() {
    let expected = answers_alone(6, 2);
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    enqueue_docs(&store, 6);
    let (signals, status, handle) = running(&store, 2);
    wait_until("two batch sequences in flight", || {
        status.lock().unwrap().in_flight == 2
    });
    // Streamed, with a stop string: "answer-…" ends before its "-".
    let (c, mut rx) = chat("m.gguf", "hello", true, &["-"]);
    assert!(signals.submit_chat(c).is_ok());
    let got = events(&mut rx);
    let streamed: String = got
        .iter()
        .filter_map(|e| match e {
            ChatEvent::Delta(Piece::Answer(t)) => Some(t.as_str()),
            ChatEvent::Delta(Piece::Reasoning(t)) => panic!("no thinking asked: {t:?}"),
            _ => None,
        })
        .collect();
    match got.last() {
        Some(ChatEvent::Done(a)) => {
            assert_eq!(a.answer, "answer", "cut at the stop string");
            assert_eq!(streamed, a.answer, "the stream adds up to the answer");
            assert_eq!(a.finish, crate::engine::FinishReason::Stop);
        }
        other => panic!("{other:?}"),
    }
    // Not streamed: only the end.
    let (c, mut rx) = chat("m.gguf", "again", false, &[]);
    assert!(signals.submit_chat(c).is_ok());
    let got = events(&mut rx);
    assert!(matches!(got.as_slice(), [ChatEvent::Done(a)] if a.answer.starts_with("answer-")));
    wait_until("every job done", || store.counts().unwrap().succeeded == 6);
    let st = status.lock().unwrap().clone();
    assert_eq!(st.chats_served, 2);
    assert!(st.preempted >= 1, "a batch sequence gave its slot: {st:?}");
    signals.stop();
    assert_eq!(handle.join().unwrap().unwrap(), Exit::Shutdown);
    assert_eq!(
        answers(&store),
        expected,
        "the same answers as without chats"
    );
    assert!(
        store.list(&Default::default()).unwrap().len() == 6,
        "chats are not stored jobs"
    );
}

#[test]
fn a_chat_on_another_model_makes_the_batch_yield_its_jobs_which_resume_after() {
    let expected = answers_alone(4, 2);
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    let ids = enqueue_docs(&store, 4);
    let (signals, status, handle) = running(&store, 2);
    wait_until("batch sequences in flight", || {
        status.lock().unwrap().in_flight > 0
    });
    let (c, mut rx) = chat("other.gguf", "hello", false, &[]);
    assert!(signals.submit_chat(c).is_ok());
    match events(&mut rx).last() {
        Some(ChatEvent::Done(a)) => assert!(a.answer.starts_with("answer-")),
        other => panic!("{other:?}"),
    }
    wait_until("every job done", || store.counts().unwrap().succeeded == 4);
    signals.stop();
    handle.join().unwrap().unwrap();
    assert_eq!(answers(&store), expected);
    let yielded = ids.iter().any(|&id| {
        (store.events(id).unwrap().iter()).any(|e| e.reason.contains("yielded to an interactive"))
    });
    assert!(
        yielded,
        "the batch's jobs went back to the queue for the chat"
    );
}

/// A worker (B = 1) whose only slot holds one long job, in flight when this returns.
fn one_long_job_in_flight(
    store: &Arc<SledStore>,
) -> (
    Signals,
    std::thread::JoinHandle<Result<Exit, crate::queue::StoreError>>,
) {
    enqueue(store, "long", &"x".repeat(200), Task::Summarize, "m.gguf");
    let (signals, status, handle) = running(store, 1);
    wait_until("the job in flight", || {
        status.lock().unwrap().in_flight == 1
    });
    (signals, handle)
}

#[test]
fn chats_waiting_or_running_at_shutdown_are_told_the_worker_stops() {
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    let (signals, handle) = one_long_job_in_flight(&store);
    signals.shutdown.trigger();
    let (c, _rx) = chat("m.gguf", "hello", false, &[]);
    // Submitted after the stop was asked: refused (the HTTP API answers 503), never left
    // waiting for a loop that is gone.
    assert_eq!(
        signals.submit_chat(c),
        Err(crate::scheduler::Refused::Stopping)
    );
    handle.join().unwrap().unwrap();
}

#[test]
fn a_chat_waiting_when_the_loop_stops_is_answered_not_stranded() {
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    let (signals, handle) = one_long_job_in_flight(&store);
    // A chat on another model, and at once the stop: whichever the loop sees first, the chat
    // ends with an answer or with "the worker is stopping".
    let (c, mut rx) = chat("other.gguf", "hello", false, &[]);
    assert!(signals.submit_chat(c).is_ok());
    signals.stop();
    handle.join().unwrap().unwrap();
    match events(&mut rx).last() {
        Some(ChatEvent::Failed(f)) => assert_eq!(f.kind, FailureKind::Unavailable),
        Some(ChatEvent::Done(_)) => {}
        other => panic!("{other:?}"),
    }
}

/// Steps carry few batch prompt tokens only while a person chats (a chat waits, runs, or
/// came within `CONVERSING`): an overnight drain with nobody asking runs at full steps.
#[test]
fn steps_are_capped_only_while_a_person_chats() {
    let drained = |with_chat: bool| {
        let (_d, store) = temp_store();
        let store = Arc::new(store);
        enqueue_docs(&store, 3);
        let engine = FakeEngine::new(1000);
        let log = engine.log.clone();
        let signals = Signals::default();
        let (c, mut rx) = chat("m.gguf", "hello", false, &[]);
        if with_chat {
            assert!(signals.submit_chat(c).is_ok());
        }
        let settings = RunSettings {
            parallel: 2,
            ..settings(1000)
        };
        let w = worker_with(&store, engine, settings, now, true, &signals);
        assert!(matches!(w.run().unwrap(), Exit::Drained { .. }));
        if with_chat {
            assert!(matches!(events(&mut rx).last(), Some(ChatEvent::Done(_))));
        }
        assert_eq!(store.counts().unwrap().succeeded, 3);
        let caps = log.lock().unwrap().prompt_caps.clone();
        caps
    };
    let quiet = drained(false);
    assert!(
        !quiet.is_empty() && quiet.iter().all(Option::is_none),
        "{quiet:?}"
    );
    let chatting = drained(true);
    assert!(
        !chatting.is_empty()
            && chatting
                .iter()
                .all(|c| *c == Some(crate::scheduler::chat::PROMPT_CAP)),
        "{chatting:?}"
    );
}

/// A chat submitted while a batch step decodes stops that step (the engine's interrupt); the
/// loop lowers the flag as it takes the chat, so only that step stops, the chat's prompt
/// goes next, and the batch's answers are the ones it gives alone.
#[test]
fn a_chat_stops_the_batch_step_in_progress_and_only_that_one() {
    let expected = answers_alone(3, 2);
    let (_d, store) = temp_store();
    let store = Arc::new(store);
    enqueue_docs(&store, 3);
    let mut engine = FakeEngine::new(1000);
    let log = engine.log.clone();
    let signals = Signals::default();
    let (c, mut rx) = chat("m.gguf", "hello", false, &[]);
    let mut pending = Some(c);
    let submit = signals.clone();
    // Submitted from inside the third step, as the HTTP server does while a decode runs.
    engine.on_step = Some(Box::new(move |n| {
        if n == 3 {
            let c = pending.take().expect("once");
            assert!(submit.submit_chat(c).is_ok());
        }
    }));
    let settings = RunSettings {
        parallel: 2,
        ..settings(1000)
    };
    let w = worker_with(&store, engine, settings, now, true, &signals);
    let status = w.status.clone();
    assert!(matches!(w.run().unwrap(), Exit::Drained { .. }));
    assert!(matches!(events(&mut rx).last(), Some(ChatEvent::Done(_))));
    assert_eq!(
        log.lock().unwrap().stopped,
        1,
        "the step in progress, alone"
    );
    assert_eq!(status.lock().unwrap().steps_stopped, 1);
    assert_eq!(answers(&store), expected);
}
