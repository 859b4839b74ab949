//! Schema 7 → 8 (`migrations/0008_provenance.md`): `JobResult` gains `provenance`, what
//! reproduces an answer (the model's identity, the template, the kernels, the engine), and
//! `cached_tokens`, the prompt tokens whose KV cells were reused; a checkpoint (`ChunkOutput`)
//! gains `cached_tokens` too. A result written before holds `None` (what ran it was not
//! recorded) and 0 (nothing was reused before schema 8). Every other value keeps its layout and
//! only changes its version byte ([`super::super::codec::READS_FROM`] becomes 8).
//!
//! Crash-safe without a transaction: a value already at version 8 is left alone, so a
//! migration cut short simply runs again (the stored version changes only at the end).

use serde::{Deserialize, Serialize};

use super::super::trees::t;
use super::super::{Result, SledStore};
use crate::job::{ChunkOutput, JobResult, Millis, ModelRef, Usage};
use crate::queue::Queue;

/// `JobResult` as schemas 3 to 7 wrote it.
#[derive(Deserialize, Serialize)]
pub(super) struct ResultV7 {
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
    pub choice: Option<String>,
}

/// `ChunkOutput` as schemas 3 to 7 wrote it.
#[derive(Deserialize, Serialize)]
pub(super) struct ChunkV7 {
    pub text: String,
    pub reasoning: Option<String>,
    pub usage: Usage,
    pub millis: u64,
    pub n_ctx: u32,
    pub chunks_total: u32,
    pub model: String,
}

fn chunk_v8(c: ChunkV7) -> ChunkOutput {
    ChunkOutput {
        text: c.text,
        reasoning: c.reasoning,
        usage: c.usage,
        millis: c.millis,
        n_ctx: c.n_ctx,
        chunks_total: c.chunks_total,
        model: c.model,
        cached_tokens: 0,
    }
}

fn result_v8(r: ResultV7) -> JobResult {
    JobResult {
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
        choice: r.choice,
        provenance: None,
        cached_tokens: 0,
    }
}

/// The versions whose values this step reads: 5 to 7 shared one layout.
const FROM: [u8; 3] = [5, 6, 7];

pub fn run(store: &SledStore) -> Result<()> {
    let others: Vec<usize> = super::VERSIONED
        .into_iter()
        .filter(|&tree| tree != t::RESULTS && tree != t::CHECKPOINTS)
        .collect();
    super::relabel(store, &others, &FROM, 8)?;
    super::rewrite(store, t::RESULTS, &FROM, 8, result_v8)?;
    super::rewrite(store, t::CHECKPOINTS, &FROM, 8, chunk_v8)?;
    store.flush()
}

#[cfg(test)]
mod tests {
    use super::super::super::{codec, keys};
    use super::*;
    use crate::job::{Event, JobId, StateKind};
    use crate::queue::test_support::temp_store;

    fn model() -> ModelRef {
        ModelRef {
            name: "m".into(),
            path: "/m.gguf".into(),
            template: None,
        }
    }

    fn result(answer: &str) -> ResultV7 {
        ResultV7 {
            answer: answer.into(),
            reasoning: Some("r".into()),
            usage: Usage {
                prompt_tokens: 40,
                completion_tokens: 8,
            },
            model: model(),
            n_ctx: 512,
            chunks: 2,
            reduced: true,
            started: 1,
            finished: 2,
            generation_millis: 3,
            attempts: 1,
            n_seq: 4,
            json: None,
            choice: Some("auto".into()),
        }
    }

    fn chunk(text: &str) -> ChunkV7 {
        ChunkV7 {
            text: text.into(),
            reasoning: None,
            usage: Usage {
                prompt_tokens: 20,
                completion_tokens: 4,
            },
            millis: 5,
            n_ctx: 512,
            chunks_total: 3,
            model: "/m.gguf".into(),
        }
    }

    /// Results and checkpoints of versions 5, 6 and 7 (one layout) and an event: after the
    /// step, and after it again (a migration cut short runs again), every value decodes in
    /// this build's layout with what it held.
    #[test]
    fn results_and_checkpoints_of_5_to_7_gain_their_fields_and_a_second_run_changes_nothing() {
        let (_dir, store) = temp_store();
        for (i, version) in FROM.into_iter().enumerate() {
            let id = JobId(i as u64 + 1);
            let put = |tree: usize, key: &[u8], value: Vec<u8>| {
                store.tree(tree).insert(key, value).unwrap();
            };
            put(
                t::RESULTS,
                &keys::job(id),
                codec::encode_as(version, &result(&format!("a{i}"))).unwrap(),
            );
            put(
                t::CHECKPOINTS,
                &keys::job_part(id, 0),
                codec::encode_as(version, &chunk(&format!("c{i}"))).unwrap(),
            );
            let event = Event {
                at: 7,
                from: None,
                to: StateKind::Queued,
                chunk: None,
                reason: format!("e{i}"),
            };
            put(
                t::EVENTS,
                &keys::job_part(id, 0),
                codec::encode_as(version, &event).unwrap(),
            );
        }
        for _ in 0..2 {
            run(&store).unwrap();
            for i in 0..FROM.len() {
                let id = JobId(i as u64 + 1);
                // Values as this step leaves them: version 8 (the step to 9 relabels them).
                let get = |tree: usize, key: &[u8]| {
                    let v = store.tree(tree).get(key).unwrap().unwrap();
                    assert_eq!(v[0], 8);
                    v
                };
                let r: JobResult =
                    codec::decode_body(&get(t::RESULTS, &keys::job(id))[1..]).unwrap();
                assert_eq!(r.answer, format!("a{i}"));
                assert_eq!((r.usage.prompt_tokens, r.n_seq), (40, 4));
                assert_eq!(r.choice.as_deref(), Some("auto"));
                assert_eq!((r.provenance, r.cached_tokens), (None, 0));
                let c: ChunkOutput =
                    codec::decode_body(&get(t::CHECKPOINTS, &keys::job_part(id, 0))[1..]).unwrap();
                assert_eq!(
                    (c.text.as_str(), c.chunks_total),
                    (format!("c{i}").as_str(), 3)
                );
                assert_eq!((c.model.as_str(), c.cached_tokens), ("/m.gguf", 0));
                let e: Event =
                    codec::decode_body(&get(t::EVENTS, &keys::job_part(id, 0))[1..]).unwrap();
                assert_eq!(e.reason, format!("e{i}"));
            }
        }
    }
}
