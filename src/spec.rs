//! Job specs as an enqueue makes them: the parts shared by every document of one enqueue
//! ([`SpecTemplate`]), and the job of one OpenAI batch line. The CLI's `enqueue` and the HTTP
//! API's `POST /v1/batches` build their jobs here, so one file gives the same jobs either way.
//! Pure.

use crate::ingest::BatchItem;
use crate::job::{
    chat_document, document_sha256, Constraint, GenParams, JobSpec, ModelRef, Quality, Task,
};
use crate::queue::NewJob;

/// The parts of a spec shared by every document of one enqueue.
#[derive(Debug, Clone)]
pub struct SpecTemplate {
    pub task: Task,
    pub system: Option<String>,
    pub model: ModelRef,
    pub params: GenParams,
    pub priority: i32,
    pub not_before: Option<u64>,
    pub max_attempts: u32,
    pub constraint: Option<Constraint>,
    pub fallback: Vec<ModelRef>,
    pub auto: Option<Quality>,
}

impl SpecTemplate {
    /// The spec of a document named `custom_id` from `source` with this text.
    pub fn spec(&self, custom_id: String, source: String, text: &str) -> JobSpec {
        JobSpec {
            custom_id,
            source,
            doc_sha256: document_sha256(text),
            doc_bytes: text.len() as u64,
            task: self.task.clone(),
            system: self.system.clone(),
            model: self.model.clone(),
            params: self.params.clone(),
            priority: self.priority,
            not_before: self.not_before,
            max_attempts: self.max_attempts,
            extra_json: None,
            constraint: self.constraint.clone(),
            fallback: self.fallback.clone(),
            auto: self.auto,
        }
    }

    /// The job of one batch line (`source`: where it was, `night.jsonl:12`): its messages
    /// are the document, its body's settings override the template's.
    pub fn chat(&self, item: BatchItem, source: String) -> NewJob {
        let (doc, turns) = chat_document(&item.messages);
        let mut spec = self.spec(item.custom_id, source, &doc);
        spec.task = Task::Chat { turns };
        item.gen.apply(&mut spec.params);
        spec.extra_json = item.extra;
        if item.constraint.is_some() {
            spec.constraint = item.constraint;
        }
        NewJob { spec, text: doc }
    }
}
