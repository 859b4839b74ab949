//! The stable JSON shapes of `results --jsonl`, `--format openai`, `list --json` and
//! `show --json` (documented in the README), and human-readable helpers.

use serde_json::{json, Value};

pub use crate::openai::{batch_json, openai_error, openai_success};

use crate::job::{Constraint, JobState, Millis, Task};
use crate::protocol::JobView;

/// An `f32` as JSON the way a person wrote it (`0.7`, not `0.699999988079071`).
fn f32_json(x: f32) -> Value {
    serde_json::from_str(&x.to_string()).unwrap_or(Value::Null)
}

pub fn task_json(task: &Task) -> Value {
    match task {
        Task::Summarize | Task::Keywords => json!({"name": task.name()}),
        Task::Classify { labels } => json!({"name": "classify", "labels": labels}),
        Task::Extract { fields } => json!({"name": "extract", "fields": fields}),
        Task::Custom { prompt } => json!({"name": "custom", "prompt": prompt}),
        // The messages themselves are the document: a listing does not repeat them.
        Task::Chat { turns } => json!({"name": "chat", "turns": turns}),
    }
}

pub fn error_of(state: &JobState) -> Option<&str> {
    match state {
        JobState::Failed { error, .. } | JobState::Dead { error, .. } => Some(error),
        _ => None,
    }
}

/// One job as a JSON object (the `--jsonl` line).
pub fn job_json(view: &JobView) -> Value {
    let job = &view.job;
    let s = &job.spec;
    let r = view.result.as_ref();
    let (started, finished) = match (&job.state, r) {
        (_, Some(r)) => (Some(r.started), Some(r.finished)),
        (JobState::Running { started, .. }, None) => (Some(*started), None),
        _ => (None, None),
    };
    json!({
        "id": job.id.0,
        "custom_id": s.custom_id,
        "source": s.source,
        "state": job.state.kind().as_str(),
        "batch": job.batch.map(|b| b.to_string()),
        "task": task_json(&s.task),
        "model": r.map(|r| &r.model.name).unwrap_or(&s.model.name),
        "model_path": r.map(|r| &r.model.path).unwrap_or(&s.model.path),
        "parameters": {
            "max_tokens": s.params.max_tokens,
            "temperature": f32_json(s.params.temperature),
            "top_p": f32_json(s.params.top_p),
            "top_k": s.params.top_k,
            "min_p": f32_json(s.params.min_p),
            "seed": s.params.seed,
            "thinking": s.params.thinking,
            "n_ctx": r.map(|r| r.n_ctx),
            "n_seq": r.map(|r| r.n_seq),
        },
        // `--model auto`: the quality asked for, and why the model that ran was chosen (also
        // set when a fallback ran).
        "quality": s.auto.map(|q| q.as_str()),
        "choice": r.and_then(|r| r.choice.as_ref()),
        // What reproduces the answer beside the parameters above (null for a result stored
        // before schema 8).
        "provenance": r.and_then(|r| r.provenance.as_ref()).map(|p| json!({
            "model": p.model,
            "template": p.template,
            "kernels": p.kernels,
            "engine": p.engine,
        })),
        "constraint": match &s.constraint {
            None => Value::Null,
            Some(Constraint::JsonSchema(_)) => json!("json_schema"),
            Some(Constraint::Grammar(_)) => json!("grammar"),
        },
        "answer": r.map(|r| &r.answer),
        "json": r
            .and_then(|r| r.json.as_deref())
            .and_then(|j| serde_json::from_str::<Value>(j).ok()),
        "reasoning": r.and_then(|r| r.reasoning.as_ref()),
        "usage": r.map(|r| json!({
            "prompt_tokens": r.usage.prompt_tokens,
            "completion_tokens": r.usage.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": r.cached_tokens},
        })),
        "chunks": r.map(|r| r.chunks),
        "timings": {
            "enqueued_ms": job.enqueued,
            "started_ms": started,
            "finished_ms": finished,
            "generation_ms": r.map(|r| r.generation_millis),
        },
        "attempts": job.attempts,
        "error": error_of(&job.state),
    })
}

/// A time as `2026-11-26 05:37:38Z` (UTC), without a date library.
pub fn utc(ms: Millis) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// `1h 02m`, `3m 20s`, `12s`.
pub fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

pub fn ago(then: Millis, now: Millis) -> String {
    format!("{} ago", human_duration(now.saturating_sub(then)))
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humans_read_these() {
        assert_eq!(human_duration(12_000), "12s");
        assert_eq!(human_duration(200_000), "3m 20s");
        assert_eq!(human_duration(3_720_000), "1h 02m");
        assert_eq!(human_bytes(500), "500 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(1_795_672_495_787), "2026-11-26 05:54:55Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00Z");
    }
}
