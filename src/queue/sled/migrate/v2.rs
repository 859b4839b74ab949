//! Schema 1 → 2 (`migrations/0002_structured_output.md`): `JobSpec` gains `constraint`,
//! `JobResult` gains `n_seq` and `json`; the dedupe key no longer hashes the schema byte. Every
//! other value keeps its layout and only changes its version byte.
//!
//! Crash-safe without a transaction: a value already at version 2 is left alone, so a
//! migration cut short by a crash simply runs again (the stored version changes only at the
//! end).

use crate::queue::Queue;
use serde::{Deserialize, Serialize};

use super::super::codec::{self, decode_body};
use super::super::trees::t;
use super::super::{Result, SledStore};
use super::v3::{JobV2, ResultV2, SpecV2};
use super::v5::TaskV4;
use crate::job::{GenParams, JobId, JobState, Millis, ModelRef, Usage};

/// `JobSpec` as schema 1 wrote it.
#[derive(Deserialize, Serialize)]
struct SpecV1 {
    custom_id: String,
    source: String,
    doc_sha256: String,
    doc_bytes: u64,
    task: TaskV4,
    system: Option<String>,
    model: ModelRef,
    params: GenParams,
    priority: i32,
    not_before: Option<Millis>,
    max_attempts: u32,
    extra_json: Option<String>,
}

/// `Job` as schema 1 wrote it.
#[derive(Deserialize, Serialize)]
struct JobV1 {
    id: JobId,
    spec: SpecV1,
    state: JobState,
    attempts: u32,
    enqueued: Millis,
    updated: Millis,
}

/// `JobResult` as schema 1 wrote it.
#[derive(Deserialize, Serialize)]
struct ResultV1 {
    answer: String,
    reasoning: Option<String>,
    usage: Usage,
    model: ModelRef,
    n_ctx: u32,
    chunks: u32,
    reduced: bool,
    started: Millis,
    finished: Millis,
    generation_millis: u64,
    attempts: u32,
}

fn job_v2(old: JobV1) -> JobV2 {
    let s = old.spec;
    JobV2 {
        id: old.id,
        spec: SpecV2 {
            custom_id: s.custom_id,
            source: s.source,
            doc_sha256: s.doc_sha256,
            doc_bytes: s.doc_bytes,
            task: s.task,
            system: s.system,
            model: s.model,
            params: s.params,
            priority: s.priority,
            not_before: s.not_before,
            max_attempts: s.max_attempts,
            extra_json: s.extra_json,
            constraint: None,
            fallback: Vec::new(),
        },
        state: old.state,
        attempts: old.attempts,
        enqueued: old.enqueued,
        updated: old.updated,
    }
}

fn result_v2(r: ResultV1) -> ResultV2 {
    ResultV2 {
        answer: r.answer,
        reasoning: r.reasoning,
        usage: r.usage,
        model: r.model,
        n_ctx: r.n_ctx,
        chunks: r.chunks,
        reduced: r.reduced,
        started: r.started,
        finished: r.finished,
        generation_millis: r.generation_millis,
        attempts: r.attempts,
        n_seq: 1, // schema 1 decoded one sequence at a time
        json: None,
    }
}

/// Trees whose values carry a version byte but kept their layout.
const RELABEL: [usize; 4] = [t::META, t::DOCUMENTS, t::CHECKPOINTS, t::EVENTS];

pub fn run(store: &SledStore) -> Result<()> {
    super::relabel(store, &RELABEL, &[1], 2)?;
    // The dedupe tree, whose key changed here, is rebuilt by step 5 (whose key changed again).
    let jobs = store.tree(t::JOBS);
    for kv in jobs.iter() {
        let (k, v) = kv?;
        if let Some((1, body)) = v.split_first() {
            let job = job_v2(decode_body::<JobV1>(body)?);
            jobs.insert(&k, codec::encode_as(2, &job)?)?;
        }
    }
    let results = store.tree(t::RESULTS);
    for kv in results.iter() {
        let (k, v) = kv?;
        if let Some((1, body)) = v.split_first() {
            let r = result_v2(decode_body::<ResultV1>(body)?);
            results.insert(k, codec::encode_as(2, &r)?)?;
        }
    }
    store.flush()
}

#[cfg(test)]
mod tests {
    use super::super::super::keys;
    use super::*;
    use crate::job::{JobState, StateKind};
    use crate::queue::prelude::*;
    use crate::queue::sled::trees::meta;
    use crate::queue::OpenOptions;

    fn v1<T: Serialize>(value: &T) -> Vec<u8> {
        let mut out = vec![1];
        out.extend(codec::encode_body(value).unwrap());
        out
    }

    /// A store as schema 1 left it: a succeeded job with a result and a queued one with a
    /// checkpoint, written value by value in the old layout.
    #[test]
    fn a_schema_1_store_is_upgraded_value_by_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let spec = |name: &str| SpecV1 {
            custom_id: name.into(),
            source: name.into(),
            doc_sha256: format!("sha-{name}"),
            doc_bytes: 4,
            task: TaskV4::Summarize,
            system: None,
            model: ModelRef {
                name: "m".into(),
                path: "/m.gguf".into(),
                template: None,
            },
            params: GenParams::qwen3_defaults(false),
            priority: 0,
            not_before: None,
            max_attempts: 3,
            extra_json: None,
        };
        {
            let store = SledStore::open(&path, &OpenOptions::default()).unwrap();
            let done = JobV1 {
                id: JobId(1),
                spec: spec("a"),
                state: JobState::Succeeded {
                    finished: 9,
                    usage: Usage::default(),
                },
                attempts: 1,
                enqueued: 1,
                updated: 9,
            };
            let queued = JobV1 {
                id: JobId(2),
                spec: spec("b"),
                state: JobState::Queued,
                attempts: 0,
                enqueued: 2,
                updated: 2,
            };
            let result = ResultV1 {
                answer: "an answer".into(),
                reasoning: None,
                usage: Usage::default(),
                model: spec("a").model,
                n_ctx: 512,
                chunks: 1,
                reduced: false,
                started: 5,
                finished: 9,
                generation_millis: 3,
                attempts: 1,
            };
            store
                .tree(t::JOBS)
                .insert(keys::job(JobId(1)), v1(&done))
                .unwrap();
            store
                .tree(t::JOBS)
                .insert(keys::job(JobId(2)), v1(&queued))
                .unwrap();
            store
                .tree(t::RESULTS)
                .insert(keys::job(JobId(1)), v1(&result))
                .unwrap();
            store
                .tree(t::DOCUMENTS)
                .insert(keys::job_part(JobId(2), 0), v1(&"text".to_string()))
                .unwrap();
            store
                .tree(t::META)
                .insert(meta::NEXT_JOB_ID, v1(&3u64))
                .unwrap();
            store
                .tree(t::META)
                .insert(meta::SCHEMA_VERSION, &[1])
                .unwrap();
            store.flush().unwrap();
        }
        // Reopening migrates.
        let store = loop {
            match SledStore::open(&path, &OpenOptions::default()) {
                Ok(s) => break s,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        };
        // Every step ran: 1 → 2 → 3 → … (the latest).
        assert_eq!(
            super::super::stored_version(&store).unwrap(),
            Some(crate::queue::codec::SCHEMA_VERSION)
        );
        let job = store.job(JobId(2)).unwrap().unwrap();
        assert_eq!(job.spec.custom_id, "b");
        assert_eq!(job.spec.constraint, None);
        assert_eq!(job.state.kind(), StateKind::Queued);
        assert_eq!(store.document(JobId(2)).unwrap(), "text");
        let r = store.result(JobId(1)).unwrap().unwrap();
        assert_eq!((r.answer.as_str(), r.n_seq, r.json), ("an answer", 1, None));
        assert_eq!((job.spec.auto, r.choice), (None, None));
        // The dedupe index was rebuilt with the new key: the same document is found.
        let key = crate::queue::identity::dedupe_key(&job.spec);
        assert_eq!(
            store.tree(t::DEDUPE).get(key).unwrap().as_deref(),
            Some(&keys::job(JobId(2))[..])
        );
        // Counters were relabelled by every step that relabels.
        assert_eq!(
            store.tree(t::META).get(meta::NEXT_JOB_ID).unwrap().unwrap()[0],
            crate::queue::codec::SCHEMA_VERSION
        );
    }
}
