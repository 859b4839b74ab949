//! Job identity: when enqueued work is the same job as an earlier one. One rule for every
//! backend (and for the sled migration that rebuilt the index under it).

use sha2::{Digest, Sha256};

use super::codec;
use crate::job::JobSpec;

/// The dedupe key (schema 5): the same work enqueued again is the same job.
///
/// A document from a file is the same work when its text, task, system prompt, model,
/// constraint, `--model auto` quality and generation parameters are equal; a request of an
/// OpenAI batch file when, besides, its `custom_id` and the body fields kept as they are
/// (`extra_json`) are equal: in a batch the id is part of the request, so two ids are two
/// jobs, and re-running a file is idempotent. A chat's messages are its document and turns.
pub fn dedupe_key(spec: &JobSpec) -> [u8; 32] {
    let mut h = Sha256::new();
    // Every field with its length first, so that no two specs run into the same bytes.
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(b"dedupe 5");
    field(spec.doc_sha256.as_bytes());
    // Values as bincode bodies (no schema byte): the same value gives the same bytes.
    field(&codec::encode_body(&spec.task).unwrap_or_default());
    field(&codec::encode_body(&spec.system).unwrap_or_default());
    field(spec.model.path.as_bytes());
    field(&codec::encode_body(&spec.constraint).unwrap_or_default());
    field(&codec::encode_body(&spec.auto).unwrap_or_default());
    field(&codec::encode_body(&spec.params).unwrap_or_default());
    if matches!(spec.task, crate::job::Task::Chat { .. }) {
        field(spec.custom_id.as_bytes());
        field(&codec::encode_body(&spec.extra_json).unwrap_or_default());
    }
    h.finalize().into()
}
