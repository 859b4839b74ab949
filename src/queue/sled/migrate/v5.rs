//! Schema 4 → 5 (`migrations/0005_conversations.md`): a chat job's messages leave its record
//! (`Task::Chat { messages }` becomes `Task::Chat { turns }`: roles and lengths; the messages
//! are the job's document), and dedupe keys take the parameters, and for a batch request its
//! `custom_id`, so the `dedupe` tree is rebuilt. Every other value keeps its layout and only
//! changes its version byte.
//!
//! Crash-safe without one big transaction (a store of a million jobs does not fit in one):
//! - a value already at version 5 is left alone, and each job moves with its document in one
//!   transaction, so a migration cut short anywhere (`kill -9`, power loss) runs again from
//!   where it stands;
//! - the dedupe tree is rebuilt from the jobs after they all moved, from scratch each time;
//! - the stored version changes only at the end ([`super::run`]).
//!
//! A job whose schema-4 value does not decode is left as it is: once the store reads schema 5
//! it is quarantined like any damaged value, and the rest of the store upgrades.

use crate::queue::Queue;
use serde::{Deserialize, Serialize};

use super::super::codec::decode_body;
use super::super::trees::t;
use super::super::tx::enc_as;
use super::super::write::split_parts;
use super::super::{keys, Result, SledStore};
use super::v9::JobV8;
use crate::job::{
    chat_document, ChatMessage, Constraint, GenParams, JobSpec, JobState, Millis, ModelRef,
    Quality, Task,
};
use crate::queue::identity::dedupe_key;

/// `Task` as schemas 1 to 4 wrote it: a chat kept its messages inline.
#[derive(Deserialize, Serialize)]
pub(super) enum TaskV4 {
    Summarize,
    Keywords,
    Classify { labels: Vec<String> },
    Extract { fields: Vec<String> },
    Custom { prompt: String },
    Chat { messages: Vec<ChatMessage> },
}

/// `JobSpec` as schemas 3 and 4 wrote it.
#[derive(Deserialize, Serialize)]
pub(super) struct SpecV4 {
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
    pub auto: Option<Quality>,
}

/// `Job` as schemas 3 and 4 wrote it.
#[derive(Deserialize, Serialize)]
pub(super) struct JobV4 {
    pub id: crate::job::JobId,
    pub spec: SpecV4,
    pub state: JobState,
    pub attempts: u32,
    pub enqueued: Millis,
    pub updated: Millis,
}

/// The job in schema 5's layout, and for a chat the document its messages make (`None`: the
/// document is unchanged).
fn job_v5(old: JobV4) -> (JobV8, Option<String>) {
    let s = old.spec;
    let mut document = None;
    let task = match s.task {
        TaskV4::Summarize => Task::Summarize,
        TaskV4::Keywords => Task::Keywords,
        TaskV4::Classify { labels } => Task::Classify { labels },
        TaskV4::Extract { fields } => Task::Extract { fields },
        TaskV4::Custom { prompt } => Task::Custom { prompt },
        TaskV4::Chat { messages } => {
            let (text, turns) = chat_document(&messages);
            document = Some(text);
            Task::Chat { turns }
        }
    };
    let job = JobV8 {
        id: old.id,
        spec: JobSpec {
            custom_id: s.custom_id,
            source: s.source,
            doc_sha256: s.doc_sha256,
            doc_bytes: s.doc_bytes,
            task,
            system: s.system,
            model: s.model,
            params: s.params,
            priority: s.priority,
            not_before: s.not_before,
            max_attempts: s.max_attempts,
            extra_json: s.extra_json,
            constraint: s.constraint,
            fallback: s.fallback,
            auto: s.auto,
        },
        state: old.state,
        attempts: old.attempts,
        enqueued: old.enqueued,
        updated: old.updated,
    };
    (job, document)
}

/// Trees whose values are encoded values (a version byte, then bincode) that kept their
/// layout. The index trees (`ready`, `delayed`, `by_state`, `custom_ids`, `dedupe`) hold no
/// encoded values.
const RELABEL: [usize; 12] = [
    t::META,
    t::DOCUMENTS,
    t::CHECKPOINTS,
    t::RESULTS,
    t::EVENTS,
    t::MODELS,
    t::MODEL_MEMORY,
    t::MEMORY_SAMPLES,
    t::MEMORY_MINUTES,
    t::CALIBRATIONS,
    t::CRASHES,
    t::QUARANTINE,
];

/// Does `v` carry a version byte of schema 3 or 4 (the layouts this step reads)?
fn old(v: &[u8]) -> bool {
    matches!(v.first(), Some(3 | 4))
}

/// Move one job, with its document when it is a chat whose stored text is not exactly its
/// messages' (written by a version that laid the document out otherwise), in one transaction.
fn move_job(store: &SledStore, key: &[u8], old_value: &[u8]) -> Result<()> {
    let Ok(old_job) = decode_body::<JobV4>(&old_value[1..]) else {
        // Damaged: quarantined when it is next read (see the module's head).
        return Ok(());
    };
    let (mut job, messages) = job_v5(old_job);
    // The new document, and the keys of the parts it replaces.
    let mut replace = None;
    if let Some(text) = messages {
        let (parts, stored) = stored_document(store, job.id)?;
        if stored.as_deref() != Some(text.as_str()) {
            job.spec.doc_sha256 = crate::job::document_sha256(&text);
            job.spec.doc_bytes = text.len() as u64;
            replace = Some((text, parts));
        }
    }
    store.transact(|tx| {
        // Still the value read (nothing else writes during a migration; cheap to be sure).
        if tx.0[t::JOBS].get(key)?.as_deref() != Some(old_value) {
            return Ok(());
        }
        tx.0[t::JOBS].insert(key, enc_as(5, &job)?)?;
        if let Some((text, parts)) = &replace {
            for k in parts {
                tx.0[t::DOCUMENTS].remove(&k[..])?;
            }
            for (n, part) in split_parts(text).into_iter().enumerate() {
                tx.0[t::DOCUMENTS].insert(&keys::job_part(job.id, n as u32), enc_as(5, &part)?)?;
            }
        }
        Ok(())
    })
}

/// A job's document as stored: the keys of its parts, and its text if every part decodes
/// (whichever of versions 3 to 5 a part carries: the relabel runs after the jobs move).
fn stored_document(
    store: &SledStore,
    id: crate::job::JobId,
) -> Result<(Vec<Vec<u8>>, Option<String>)> {
    let mut keys = Vec::new();
    let mut text = Some(String::new());
    for kv in store.tree(t::DOCUMENTS).scan_prefix(keys::job(id)) {
        let (k, v) = kv?;
        keys.push(k.to_vec());
        let part = match v.split_first() {
            Some((3..=5, body)) => decode_body::<String>(body).ok(),
            _ => None,
        };
        text = text.zip(part).map(|(mut t, p)| {
            t.push_str(&p);
            t
        });
    }
    Ok((keys, text))
}

pub fn run(store: &SledStore) -> Result<()> {
    for kv in store.tree(t::JOBS).iter() {
        let (k, v) = kv?;
        if old(&v) {
            move_job(store, &k, &v)?;
        }
    }
    // Version 5, not this build's: later steps read what this one wrote by its number.
    super::relabel(store, &RELABEL, &[3, 4], 5)?;
    // Dedupe keys, from scratch: in job order, so that of jobs enqueued with `--force` as the
    // same work the latest is the one found (as when they were enqueued).
    let dedupe = store.tree(t::DEDUPE);
    dedupe.clear()?;
    for kv in store.tree(t::JOBS).iter() {
        let (k, v) = kv?;
        // Every job is at version 5 now, whatever this build writes: read the body as such.
        if let Some(Ok(job)) = v.split_first().map(|(_, body)| decode_body::<JobV8>(body)) {
            dedupe.insert(dedupe_key(&job.spec), k)?;
        }
    }
    store.flush()
}

#[cfg(test)]
mod tests {
    use super::super::super::codec;
    use super::*;
    use crate::job::{JobId, StateKind};
    use crate::queue::prelude::*;
    use crate::queue::sled::trees::meta;
    use crate::queue::OpenOptions;

    fn v4<T: Serialize>(value: &T) -> Vec<u8> {
        codec::encode_as(4, value).unwrap()
    }

    fn spec_v4(custom_id: &str, task: TaskV4, doc: &str) -> SpecV4 {
        SpecV4 {
            custom_id: custom_id.into(),
            source: "batch.jsonl:1".into(),
            doc_sha256: crate::job::document_sha256(doc),
            doc_bytes: doc.len() as u64,
            task,
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
            constraint: None,
            fallback: vec![],
            auto: None,
        }
    }

    /// A schema-4 store written value by value: two chat jobs with the same messages and
    /// different ids (which schema 4 deduplicated), one whose document was laid out
    /// otherwise, and a summary; the upgrade moves the messages out, keeps every document's
    /// text, and gives the two chats their own dedupe keys.
    #[test]
    fn a_schema_4_store_is_upgraded_job_by_job() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let messages = vec![
            ChatMessage {
                role: "system".into(),
                content: "Be brief.".into(),
            },
            ChatMessage {
                role: "user".into(),
                content: "Name a river.\nOne.".into(),
            },
        ];
        let (chat_doc, _) = chat_document(&messages);
        let jobs = [
            (
                1,
                spec_v4(
                    "a",
                    TaskV4::Chat {
                        messages: messages.clone(),
                    },
                    &chat_doc,
                ),
                chat_doc.clone(),
            ),
            (
                2,
                spec_v4(
                    "b",
                    TaskV4::Chat {
                        messages: messages.clone(),
                    },
                    &chat_doc,
                ),
                "Be brief.Name a river.".to_string(),
            ),
            (
                3,
                spec_v4("c.txt", TaskV4::Summarize, "text"),
                "text".to_string(),
            ),
        ];
        {
            let store = SledStore::open(&path, &OpenOptions::default()).unwrap();
            let tree = |i| store.tree(i).clone();
            for (id, spec, doc) in &jobs {
                let id = JobId(*id);
                let job = JobV4 {
                    id,
                    spec: serde_clone(spec),
                    state: JobState::Queued,
                    attempts: 0,
                    enqueued: 1,
                    updated: 1,
                };
                tree(t::JOBS).insert(keys::job(id), v4(&job)).unwrap();
                tree(t::DOCUMENTS)
                    .insert(keys::job_part(id, 0), v4(&doc.as_str()))
                    .unwrap();
                tree(t::BY_STATE)
                    .insert(keys::by_state(StateKind::Queued, id), &[])
                    .unwrap();
                // Schema 4's ready key: the priority, then the job (schema 9 put the
                // deadline between them).
                let ready = [&keys::ready(0, None, id)[..4], &keys::job(id)[..]].concat();
                tree(t::READY).insert(ready, &[]).unwrap();
            }
            // Schema 4 deduplicated the two chats into one key.
            tree(t::DEDUPE)
                .insert([7u8; 32], &keys::job(JobId(1)))
                .unwrap();
            tree(t::META).insert(meta::SCHEMA_VERSION, &[4]).unwrap();
            tree(t::META).insert(meta::PAUSED, v4(&true)).unwrap();
            store.flush().unwrap();
        }
        let store = SledStore::open(&path, &OpenOptions::default()).unwrap();
        assert_eq!(
            super::super::stored_version(&store).unwrap(),
            Some(codec::SCHEMA_VERSION)
        );
        assert!(store.paused().unwrap(), "a relabelled value decodes");
        for (id, _, _) in &jobs {
            let job = store.job(JobId(*id)).unwrap().unwrap();
            let text = store.document(job.id).unwrap();
            match &job.spec.task {
                Task::Chat { turns } => {
                    assert_eq!(crate::job::chat_messages(turns, &text).unwrap(), messages);
                    assert_eq!(text, chat_doc, "job {id}: the document is the messages");
                    assert_eq!(job.spec.doc_bytes, chat_doc.len() as u64);
                }
                _ => assert_eq!(text, "text"),
            }
            let key = dedupe_key(&job.spec);
            assert_eq!(
                store.tree(t::DEDUPE).get(key).unwrap().as_deref(),
                Some(&keys::job(job.id)[..]),
                "job {id} has its own dedupe key"
            );
        }
        assert_eq!(store.tree(t::DEDUPE).len(), 3, "the schema-4 keys are gone");
        assert!(store.tree(t::DEDUPE).get([7u8; 32]).unwrap().is_none());
    }

    fn serde_clone(s: &SpecV4) -> SpecV4 {
        codec::decode_body(&codec::encode_body(s).unwrap()).unwrap()
    }
}
