//! Executing a [`Request`] against the store: the one place each verb is carried out. The
//! worker's socket server and the CLI's direct mode both call [`handle`], so a verb means the
//! same with or without a worker. (The name `service` is kept for launchd/systemd.)

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::job::{BatchId, JobId, StateKind};
use crate::protocol::{JobView, Request, Response, Selector, StatusReport, STATUS_BATCHES};
use crate::queue::{BatchTarget, JobFilter, Queue, StoreError, TransitionOutcome};
use crate::scheduler::{LiveStatus, Signals};

/// The running worker, when the request comes through its socket.
#[derive(Clone)]
pub struct WorkerHooks {
    pub signals: Signals,
    pub status: Arc<Mutex<LiveStatus>>,
}

/// Answer one request. Errors become [`Response::Error`] with a one-line message, or
/// [`Response::NotFound`] when what the request names does not exist.
pub fn handle(
    store: &dyn Queue,
    request: Request,
    worker: Option<&WorkerHooks>,
    now: u64,
) -> Response {
    match handle_inner(store, request, worker, now) {
        Ok(r) => r,
        Err(e @ (StoreError::NoSuchBatch(_) | StoreError::NoSuchJob(_))) => {
            Response::NotFound(e.to_string())
        }
        Err(e) => Response::Error(e.to_string()),
    }
}

fn resolve(
    store: &dyn Queue,
    selectors: &[Selector],
) -> Result<(Vec<JobId>, Vec<String>), StoreError> {
    let mut ids = Vec::new();
    let mut missing = Vec::new();
    for s in selectors {
        match s {
            Selector::Id(id) => {
                if store.job(*id)?.is_some() {
                    ids.push(*id);
                } else {
                    // A custom id may look like a number.
                    let by_name = store.find_custom_id(&id.0.to_string())?;
                    if by_name.is_empty() {
                        missing.push(id.to_string());
                    }
                    ids.extend(by_name);
                }
            }
            Selector::CustomId(c) => {
                let found = store.find_custom_id(c)?;
                if found.is_empty() {
                    missing.push(c.clone());
                }
                ids.extend(found);
            }
            Selector::Batch(b) => {
                if store.batch(*b)?.is_none() {
                    missing.push(b.to_string());
                }
                ids.extend(store.batch_jobs(*b, None, None)?);
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(*id));
    Ok((ids, missing))
}

/// The batches among the selectors.
fn batches_of(selectors: &[Selector]) -> impl Iterator<Item = BatchId> + '_ {
    selectors.iter().filter_map(|s| match s {
        Selector::Batch(b) => Some(*b),
        _ => None,
    })
}

fn views(store: &dyn Queue, ids: &[JobId], with_events: bool) -> Result<Vec<JobView>, StoreError> {
    let mut out = Vec::with_capacity(ids.len());
    for &id in ids {
        if let Some(job) = store.job(id)? {
            out.push(JobView {
                result: store.result(id)?,
                events: if with_events {
                    store.events(id)?
                } else {
                    Vec::new()
                },
                crash: if with_events {
                    store.crash_record(id)?
                } else {
                    None
                },
                ahead: if with_events {
                    store.ahead_of(id)?
                } else {
                    None
                },
                job,
            });
        }
    }
    Ok(out)
}

/// Cancel one job. A job the worker is running is stopped by the worker itself, which records
/// the cancel; this waits (a few seconds at most) until it has.
fn cancel_one(
    store: &dyn Queue,
    id: JobId,
    worker: Option<&WorkerHooks>,
    now: u64,
) -> Result<TransitionOutcome, StoreError> {
    let outcome = store.person_cancel(id, now, worker.is_some())?;
    let (TransitionOutcome::Refused(StateKind::Running), Some(w)) = (&outcome, worker) else {
        // Done, or not possible; with no worker a Running job is left over and cancelled here.
        return Ok(outcome);
    };
    w.signals.request_cancel(id);
    let deadline = Instant::now() + Duration::from_secs(15);
    let outcome = loop {
        if Instant::now() >= deadline {
            break TransitionOutcome::Refused(StateKind::Running);
        }
        match store.job(id)?.map(|j| j.state.kind()) {
            Some(StateKind::Running) => std::thread::sleep(Duration::from_millis(20)),
            Some(StateKind::Cancelled) => return Ok(TransitionOutcome::Done),
            // It left the worker meanwhile (deferred for memory, failed, released): no longer
            // the worker's, so cancelled here.
            Some(StateKind::Queued | StateKind::Failed) => {
                w.signals.forget_cancel(id);
                return store.person_cancel(id, now, true);
            }
            Some(other) => break TransitionOutcome::Refused(other),
            None => break TransitionOutcome::NotFound,
        }
    };
    // The request must not linger: a later run of the job would be cancelled by it.
    w.signals.forget_cancel(id);
    Ok(outcome)
}

fn handle_inner(
    store: &dyn Queue,
    request: Request,
    worker: Option<&WorkerHooks>,
    now: u64,
) -> Result<Response, StoreError> {
    let wake = || {
        if let Some(w) = worker {
            w.signals.wake();
        }
    };
    Ok(match request {
        Request::ModelAdd(m) => {
            store.add_model(&m)?;
            Response::Done
        }
        Request::ModelList => Response::Models(store.models()?),
        Request::ModelRemove(name) => Response::Removed(store.remove_model(&name)?),
        Request::ModelGet(name) => Response::Model(store.model(&name)?),
        Request::ModelMemory(path) => Response::Memory(store.memory_of(&path)?),
        Request::RecordCalibration {
            path,
            calibration,
            memory,
        } => {
            for m in &memory {
                store.record_memory(&path, m)?;
            }
            store.record_calibration(&path, &calibration)?;
            Response::Done
        }
        Request::Calibrations(path) => Response::Calibrations(store.calibrations_of(&path)?),
        Request::MemoryHistory { since } => Response::History(store.samples_since(since)?),
        Request::Enqueue {
            items,
            force,
            batch,
        } => {
            // The CLI checks ids and builds chats from their messages; a request from anything
            // else is checked here too.
            let bad = items.iter().enumerate().find_map(|(i, item)| {
                let chat = match &item.spec.task {
                    crate::job::Task::Chat { turns } => {
                        crate::job::chat_messages(turns, &item.text).map(drop)
                    }
                    _ => Ok(()),
                };
                crate::job::check_custom_id(&item.spec.custom_id)
                    .and(chat)
                    .err()
                    .map(|why| (i, why))
            });
            if let Some((i, why)) = bad {
                return Ok(Response::Error(format!(
                    "document {} of the request: {why}; nothing enqueued",
                    i + 1
                )));
            }
            if let BatchTarget::New(spec) = &batch {
                if let Err(why) = spec.check() {
                    return Ok(Response::Error(format!(
                        "the batch: {why}; nothing enqueued"
                    )));
                }
            }
            let enqueued = store.enqueue_in(&items, force, now, &batch)?;
            wake();
            Response::Enqueued(enqueued)
        }
        Request::SealBatch(id) => {
            store.seal_batch(id, now)?;
            Response::Done
        }
        Request::Batches { before, limit } => Response::Batches(store.batches(before, limit)?),
        Request::CreateBatch(spec) => {
            if let Err(why) = spec.check() {
                return Ok(Response::Error(format!("the batch: {why}")));
            }
            Response::Batches(vec![store.create_batch(&spec, now)?])
        }
        Request::FailBatch { id, errors } => {
            store.fail_batch(id, &errors, now)?;
            Response::Done
        }
        Request::UploadAdd {
            filename,
            purpose,
            text,
            lines,
        } => Response::Files(vec![store.add_upload(
            &crate::upload::clean_filename(&filename),
            &purpose,
            &text,
            lines,
            now,
        )?]),
        Request::UploadGet(id) => match store.upload(id)? {
            Some(f) => Response::Files(vec![f]),
            None => Response::NotFound(format!("No such File object: {id}")),
        },
        Request::Uploads { after, limit } => Response::Files(store.uploads(after, limit)?),
        Request::UploadText(id) => match store.upload_text(id)? {
            Some(t) => Response::Text(t),
            None => Response::NotFound(format!("No such File object: {id}")),
        },
        Request::UploadRemove(id) => Response::Removed(store.remove_upload(id)?),
        Request::Batch(id) => match store.batch(id)? {
            Some(view) => Response::Batches(vec![view]),
            None => return Err(StoreError::NoSuchBatch(id)),
        },
        Request::Status => {
            let open = store.open_batches(STATUS_BATCHES)?;
            Response::Status(Box::new(StatusReport {
                counts: store.counts()?,
                worker: worker.map(|w| w.status.lock().unwrap().clone()),
                paused: store.paused()?,
                store_path: store.location(),
                store_bytes: store.size_on_disk()?,
                next_due: store.next_due()?,
                quarantined: store.quarantined_count(),
                open_batches: open.0,
                open_batch_count: open.1,
                tokens_per_sec: crate::monitor::history::generating_rate(
                    &store.samples_since(now.saturating_sub(crate::protocol::RATE_WINDOW_MS))?,
                ),
            }))
        }
        Request::List(filter) => Response::Jobs(store.list(&filter)?),
        Request::Show(selectors) => {
            let (ids, missing) = resolve(store, &selectors)?;
            Response::Views {
                views: views(store, &ids, true)?,
                missing,
            }
        }
        Request::Results(selectors) => {
            let (ids, missing) = if selectors.is_empty() {
                let all = store.list(&JobFilter::default())?;
                (all.into_iter().map(|j| j.id).collect(), Vec::new())
            } else {
                resolve(store, &selectors)?
            };
            Response::Views {
                views: views(store, &ids, false)?,
                missing,
            }
        }
        Request::Cancel(selectors) => {
            // A batch named is cancelled as a batch (its status says so), then job by job.
            for b in batches_of(&selectors) {
                store.set_batch_cancel(b, Some(now), now)?;
            }
            let (ids, missing) = resolve(store, &selectors)?;
            let mut outcomes = Vec::new();
            for id in ids {
                outcomes.push((id, cancel_one(store, id, worker, now)?));
            }
            Response::Transitions { outcomes, missing }
        }
        Request::Retry {
            selectors,
            all_failed,
        } => {
            // A batch retried runs again what did not succeed; its answers stay. (A job
            // named by itself runs again whatever its state.)
            let (named, batches): (Vec<Selector>, Vec<Selector>) = selectors
                .into_iter()
                .partition(|s| !matches!(s, Selector::Batch(_)));
            let (mut ids, mut missing) = resolve(store, &named)?;
            for b in batches_of(&batches) {
                store.set_batch_cancel(b, None, now)?;
            }
            let (of_batches, missing_batches) = resolve(store, &batches)?;
            missing.extend(missing_batches);
            for id in of_batches {
                if store
                    .job(id)?
                    .is_some_and(|j| j.state.kind() != StateKind::Succeeded)
                {
                    ids.push(id);
                }
            }
            if all_failed {
                ids.extend(store.ids_in_state(StateKind::Failed)?);
                ids.extend(store.ids_in_state(StateKind::Dead)?);
            }
            let mut outcomes = Vec::new();
            for id in ids {
                outcomes.push((id, store.retry(id, now, worker.is_some())?));
            }
            wake();
            Response::Transitions { outcomes, missing }
        }
        Request::Pause => {
            store.set_paused(true)?;
            wake();
            Response::Done
        }
        Request::Resume => {
            store.set_paused(false)?;
            wake();
            Response::Done
        }
        Request::Prune { before } => Response::Pruned(store.prune(before)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{chat_document, ChatMessage, Task, Turn};
    use crate::queue::prelude::*;
    use crate::queue::test_support::{spec, temp_store};
    use crate::queue::NewJob;

    #[test]
    fn an_enqueue_whose_chat_does_not_match_its_turns_is_refused_whole() {
        let (_d, store) = temp_store();
        let (text, turns) = chat_document(&[ChatMessage {
            role: "user".into(),
            content: "Name a river.".into(),
        }]);
        let chat = |custom_id: &str, turns: Vec<Turn>| {
            let mut s = spec(custom_id);
            s.task = Task::Chat { turns };
            NewJob {
                spec: s,
                text: text.clone(),
            }
        };
        let mut wrong = turns.clone();
        wrong[0].bytes += 1;
        let items = vec![chat("good", turns.clone()), chat("bad", wrong)];
        let answer = handle(
            &store,
            Request::Enqueue {
                items,
                force: false,
                batch: BatchTarget::None,
            },
            None,
            1,
        );
        match answer {
            Response::Error(e) => assert!(
                e.starts_with("document 2 of the request: the conversation does not match"),
                "{e}"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(store.counts().unwrap().total(), 0, "nothing enqueued");
        let items = vec![chat("good", turns)];
        let answer = handle(
            &store,
            Request::Enqueue {
                items,
                force: false,
                batch: BatchTarget::None,
            },
            None,
            1,
        );
        assert!(matches!(answer, Response::Enqueued(_)), "{answer:?}");
    }
}
