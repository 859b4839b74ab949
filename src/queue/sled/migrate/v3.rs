//! Schema 2 → 3 (`migrations/0003_model_choice.md`): `JobSpec` gains `auto` (`--model auto
//! --quality …`), `JobResult` gains `choice` (why that model ran), a memory `Sample` gains
//! `waiting_for` and `sheds`; the new tree `calibrations` starts empty. Every other value keeps
//! its layout and only changes its version byte.
//!
//! Crash-safe without a transaction: a value already at version 3 is left alone, so a
//! migration cut short by a crash simply runs again (the stored version changes only at the
//! end).

use crate::queue::Queue;
use serde::{Deserialize, Serialize};

use super::super::trees::t;
use super::super::{Result, SledStore};
use super::v5::{JobV4, SpecV4, TaskV4};
use super::v8::{ChunkV7, ResultV7};
use crate::job::{Constraint, GenParams, JobId, JobState, Millis, ModelRef, Usage};
use crate::monitor::history::Sample;
use crate::monitor::Pressure;

/// `JobSpec` as schema 2 wrote it.
#[derive(Deserialize, Serialize)]
pub(super) struct SpecV2 {
    pub custom_id: String,
    pub source: String,
    pub doc_sha256: String,
    pub doc_bytes: u64,
    pub task: TaskV4,
    pub system: Option<String>,
    pub model: ModelRef,
    pub params: GenParams,
    pub priority: i32,
    pub not_before: Option<Millis>,
    pub max_attempts: u32,
    pub extra_json: Option<String>,
    pub constraint: Option<Constraint>,
    pub fallback: Vec<ModelRef>,
}

/// `Job` as schema 2 wrote it.
#[derive(Deserialize, Serialize)]
pub(super) struct JobV2 {
    pub id: JobId,
    pub spec: SpecV2,
    pub state: JobState,
    pub attempts: u32,
    pub enqueued: Millis,
    pub updated: Millis,
}

/// `JobResult` as schema 2 wrote it.
#[derive(Deserialize, Serialize)]
pub(super) struct ResultV2 {
    pub answer: String,
    pub reasoning: Option<String>,
    pub usage: Usage,
    pub model: ModelRef,
    pub n_ctx: u32,
    pub chunks: u32,
    pub reduced: bool,
    pub started: Millis,
    pub finished: Millis,
    pub generation_millis: u64,
    pub attempts: u32,
    pub n_seq: u32,
    pub json: Option<String>,
}

/// A checkpoint (`ChunkOutput`) as schema 2 wrote it.
#[derive(Deserialize, Serialize)]
struct ChunkV2 {
    text: String,
    reasoning: Option<String>,
    usage: Usage,
    millis: u64,
    n_ctx: u32,
    chunks_total: u32,
}

fn chunk_v3(c: ChunkV2) -> ChunkV7 {
    ChunkV7 {
        text: c.text,
        reasoning: c.reasoning,
        usage: c.usage,
        millis: c.millis,
        n_ctx: c.n_ctx,
        chunks_total: c.chunks_total,
        // Unknown: schema 2 ran a job on one model (fallbacks aside).
        model: String::new(),
    }
}

/// A memory `Sample` as schema 2 wrote it.
#[derive(Deserialize, Serialize)]
struct SampleV2 {
    at: Millis,
    total: u64,
    available: u64,
    used_percent: f64,
    pressure: Pressure,
    process_rss: u64,
    device_free: Option<u64>,
    models: Vec<(String, u64)>,
    batch: u32,
    tokens_per_sec: f64,
    queue_depth: u64,
}

pub(super) fn job_v3(old: JobV2) -> JobV4 {
    let s = old.spec;
    JobV4 {
        id: old.id,
        spec: SpecV4 {
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
            constraint: s.constraint,
            fallback: s.fallback,
            auto: None,
        },
        state: old.state,
        attempts: old.attempts,
        enqueued: old.enqueued,
        updated: old.updated,
    }
}

fn result_v3(r: ResultV2) -> ResultV7 {
    ResultV7 {
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
        n_seq: r.n_seq,
        json: r.json,
        choice: None,
    }
}

fn sample_v3(s: SampleV2) -> Sample {
    Sample {
        at: s.at,
        total: s.total,
        available: s.available,
        used_percent: s.used_percent,
        pressure: s.pressure,
        process_rss: s.process_rss,
        device_free: s.device_free,
        models: s.models,
        batch: s.batch,
        tokens_per_sec: s.tokens_per_sec,
        queue_depth: s.queue_depth,
        // Schema 2 did not record waits or sheds in the history.
        waiting_for: None,
        sheds: 0,
    }
}

/// Trees whose values carry a version byte but kept their layout.
const RELABEL: [usize; 5] = [t::META, t::DOCUMENTS, t::EVENTS, t::MODELS, t::MODEL_MEMORY];

/// Rewrite every version-2 value of `tree` with `convert`, as version 3.
fn rewrite<Old: serde::de::DeserializeOwned, New: Serialize>(
    store: &SledStore,
    tree: usize,
    convert: fn(Old) -> New,
) -> Result<()> {
    super::rewrite(store, tree, &[2], 3, convert)
}

pub fn run(store: &SledStore) -> Result<()> {
    super::relabel(store, &RELABEL, &[2], 3)?;
    // Dedupe keys are unchanged: they hash `auto` only when it is set, and no schema-2 job
    // has it.
    rewrite(store, t::JOBS, job_v3)?;
    rewrite(store, t::RESULTS, result_v3)?;
    rewrite(store, t::CHECKPOINTS, chunk_v3)?;
    rewrite(store, t::MEMORY_SAMPLES, sample_v3)?;
    rewrite(store, t::MEMORY_MINUTES, sample_v3)?;
    store.flush()
}

#[cfg(test)]
mod tests {
    use super::super::super::codec;
    use super::*;
    use crate::job::StateKind;
    use crate::queue::prelude::*;
    use crate::queue::sled::keys;
    use crate::queue::sled::trees::meta;
    use crate::queue::OpenOptions;
    use crate::registry::MemoryRecord;

    fn v2<T: Serialize>(value: &T) -> Vec<u8> {
        codec::encode_as(2, value).unwrap()
    }

    /// A store as schema 2 left it, written value by value in the old layout: a queued job
    /// with a constraint, a result, a memory sample, a registered model's measured load.
    #[test]
    fn a_schema_2_store_is_upgraded_value_by_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let model = ModelRef {
            name: "m".into(),
            path: "/m.gguf".into(),
            template: None,
        };
        {
            let store = SledStore::open(&path, &OpenOptions::default()).unwrap();
            let job = JobV2 {
                id: JobId(1),
                spec: SpecV2 {
                    custom_id: "a".into(),
                    source: "a".into(),
                    doc_sha256: "sha".into(),
                    doc_bytes: 4,
                    task: TaskV4::Summarize,
                    system: None,
                    model: model.clone(),
                    params: GenParams::qwen3_defaults(false),
                    priority: 0,
                    not_before: None,
                    max_attempts: 3,
                    extra_json: None,
                    constraint: Some(Constraint::JsonSchema("{}".into())),
                    fallback: vec![model.clone()],
                },
                state: JobState::Queued,
                attempts: 0,
                enqueued: 1,
                updated: 1,
            };
            let result = ResultV2 {
                answer: "an answer".into(),
                reasoning: None,
                usage: Usage::default(),
                model: model.clone(),
                n_ctx: 512,
                chunks: 1,
                reduced: false,
                started: 5,
                finished: 9,
                generation_millis: 3,
                attempts: 1,
                n_seq: 4,
                json: Some("{}".into()),
            };
            let sample = SampleV2 {
                at: 1000,
                total: 100,
                available: 40,
                used_percent: 60.0,
                pressure: Pressure::Warn,
                process_rss: 7,
                device_free: None,
                models: vec![("m".into(), 5)],
                batch: 4,
                tokens_per_sec: 12.5,
                queue_depth: 2,
            };
            let record = record_of();
            let put = |tree: usize, k: &[u8], v: Vec<u8>| {
                store.tree(tree).insert(k, v).unwrap();
            };
            put(t::JOBS, &keys::job(JobId(1)), v2(&job));
            put(t::RESULTS, &keys::job(JobId(1)), v2(&result));
            put(t::MEMORY_SAMPLES, &1000u64.to_be_bytes(), v2(&sample));
            put(t::MEMORY_MINUTES, &0u64.to_be_bytes(), v2(&sample));
            let mut mk = b"/m.gguf\0".to_vec();
            mk.extend_from_slice(&512u32.to_be_bytes());
            mk.extend_from_slice(&4u32.to_be_bytes());
            put(t::MODEL_MEMORY, &mk, v2(&record));
            put(
                t::DOCUMENTS,
                &keys::job_part(JobId(1), 0),
                v2(&"text".to_string()),
            );
            let chunk = ChunkV2 {
                text: "chunk 0".into(),
                reasoning: None,
                usage: Usage::default(),
                millis: 4,
                n_ctx: 512,
                chunks_total: 2,
            };
            put(t::CHECKPOINTS, &keys::job_part(JobId(1), 0), v2(&chunk));
            put(t::META, meta::NEXT_JOB_ID, v2(&2u64));
            store
                .tree(t::META)
                .insert(meta::SCHEMA_VERSION, &[2])
                .unwrap();
            store.flush().unwrap();
        }
        let store = loop {
            match SledStore::open(&path, &OpenOptions::default()) {
                Ok(s) => break s,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        };
        assert_eq!(
            super::super::stored_version(&store).unwrap(),
            Some(crate::queue::codec::SCHEMA_VERSION)
        );
        let job = store.job(JobId(1)).unwrap().unwrap();
        assert_eq!(job.state.kind(), StateKind::Queued);
        assert_eq!(
            job.spec.constraint,
            Some(Constraint::JsonSchema("{}".into()))
        );
        assert_eq!((job.spec.fallback.len(), job.spec.auto), (1, None));
        let r = store.result(JobId(1)).unwrap().unwrap();
        assert_eq!(
            (r.n_seq, r.json.as_deref(), r.choice),
            (4, Some("{}"), None)
        );
        assert_eq!(store.document(JobId(1)).unwrap(), "text");
        let cps = store.checkpoints(JobId(1)).unwrap();
        assert_eq!(
            (cps[&0].text.as_str(), cps[&0].chunks_total),
            ("chunk 0", 2)
        );
        assert_eq!(cps[&0].model, "");
        let samples = store.samples_since(0).unwrap();
        assert!(!samples.is_empty());
        let s = samples.last().unwrap();
        assert_eq!((s.batch, s.tokens_per_sec, s.sheds), (4, 12.5, 0));
        assert_eq!(s.waiting_for, None);
        assert_eq!(store.memory_of("/m.gguf").unwrap(), vec![record_of()]);
        assert_eq!(store.calibration("/m.gguf", 512).unwrap(), None);
        // Counters are relabelled, and still decode.
        assert_eq!(
            store.tree(t::META).get(meta::NEXT_JOB_ID).unwrap().unwrap()[0],
            codec::SCHEMA_VERSION
        );
    }

    fn record_of() -> MemoryRecord {
        MemoryRecord {
            n_ctx: 512,
            n_seq: 4,
            weights: 10,
            context_allocated: 20,
            context_resident: 5,
            at: 3,
        }
    }
}
