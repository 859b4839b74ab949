//! Prompts for tasks, Qwen3's thinking switch, and splitting reasoning from the answer. Pure.

use crate::job::{chat_messages, ChatMessage, Task};

/// What Qwen3's own template appends to the assistant turn for `enable_thinking=false`: an
/// empty thinking block, so the model answers at once.
pub const EMPTY_THINK: &str = "<think>\n\n</think>\n\n";

/// Where the document goes in a custom prompt.
pub const TEXT_SLOT: &str = "{text}";

fn msg(role: &str, content: String) -> ChatMessage {
    ChatMessage {
        role: role.into(),
        content,
    }
}

/// The user's instruction for a task, with `text` in its place.
pub fn task_instruction(task: &Task, text: &str) -> String {
    match task {
        Task::Summarize => format!(
            "Summarize the following document in a few sentences. Answer with the summary only.\n\n{text}"
        ),
        Task::Keywords => format!(
            "List the most important keywords and key phrases of the following document, one per line, without numbering or commentary.\n\n{text}"
        ),
        Task::Classify { labels } => format!(
            "Classify the following document into exactly one of these labels: {}. Answer with the label only.\n\n{text}",
            labels.join(", ")
        ),
        Task::Extract { fields } => format!(
            "Extract the following fields from the document: {}. Answer with one JSON object whose keys are exactly these field names; use null for a field the document does not give.\n\n{text}",
            fields.join(", ")
        ),
        Task::Custom { prompt } => {
            if prompt.contains(TEXT_SLOT) {
                prompt.replace(TEXT_SLOT, text)
            } else {
                format!("{prompt}\n\n{text}")
            }
        }
        Task::Chat { .. } => text.to_string(),
    }
}

/// Messages for one chunk of a document (or the whole of a short one). A chat's document is
/// its conversation (checked when the job is claimed, see `chat_messages`); one that does not
/// match its turns is sent as one user message rather than lost.
pub fn task_messages(task: &Task, system: Option<&str>, text: &str) -> Vec<ChatMessage> {
    if let Task::Chat { turns } = task {
        let mut out = chat_messages(turns, text).unwrap_or_else(|_| vec![msg("user", text.into())]);
        if let Some(s) = system {
            if !out.iter().any(|m| m.role == "system") {
                out.insert(0, msg("system", s.to_string()));
            }
        }
        return out;
    }
    let mut out = Vec::with_capacity(2);
    if let Some(s) = system {
        out.push(msg("system", s.to_string()));
    }
    out.push(msg("user", task_instruction(task, text)));
    out
}

/// Messages that combine the outputs of consecutive chunks into one answer (map-reduce).
pub fn reduce_messages(task: &Task, system: Option<&str>, parts: &[String]) -> Vec<ChatMessage> {
    let mut joined = String::new();
    for (i, p) in parts.iter().enumerate() {
        joined.push_str(&format!("Part {}:\n{}\n\n", i + 1, p.trim()));
    }
    let instruction = match task {
        Task::Summarize => format!(
            "The following are summaries of consecutive parts of one document. Combine them into one summary of the whole document, in a few sentences. Answer with the summary only.\n\n{joined}"
        ),
        Task::Custom { prompt } => format!(
            "A long document was processed in consecutive parts with this instruction:\n\n{}\n\nThese are the answers for each part. Combine them into one answer for the whole document. Answer with the combined answer only.\n\n{joined}",
            prompt.replace(TEXT_SLOT, "[document]")
        ),
        _ => format!(
            "These are answers for consecutive parts of one document. Combine them into one answer for the whole document.\n\n{joined}"
        ),
    };
    let mut out = Vec::with_capacity(2);
    if let Some(s) = system {
        out.push(msg("system", s.to_string()));
    }
    out.push(msg("user", instruction));
    out
}

/// Complete a rendered prompt for the thinking setting. For a template that knows Qwen3's
/// `<think>` blocks, thinking off appends [`EMPTY_THINK`] exactly as Qwen3's template does for
/// `enable_thinking=false`; thinking on leaves the model to open its own block.
pub fn with_thinking(
    mut rendered: super::Prompt,
    thinking: bool,
    thinking_template: bool,
) -> super::Prompt {
    if thinking_template && !thinking {
        rendered.push_template(EMPTY_THINK);
    }
    rendered
}

/// Whether a chat template's source knows Qwen3-style thinking.
pub fn template_knows_thinking(template_source: &str) -> bool {
    template_source.contains("<think>")
}

/// Split generated text into (reasoning, answer). The reasoning is what stands inside a
/// `<think>…</think>` block at the start; an unclosed block (generation cut short) is all
/// reasoning. Text without a block is all answer.
pub fn split_reasoning(raw: &str) -> (Option<String>, String) {
    let trimmed = raw.trim_start();
    let Some(after_open) = trimmed.strip_prefix("<think>") else {
        // Thinking with the opening tag already in the prompt: only a closing tag shows.
        if let Some((reasoning, answer)) = raw.split_once("</think>") {
            if !reasoning.contains("<think>") {
                return (non_empty(reasoning), answer.trim().to_string());
            }
        }
        return (None, raw.trim().to_string());
    };
    match after_open.split_once("</think>") {
        Some((reasoning, answer)) => (non_empty(reasoning), answer.trim().to_string()),
        None => (non_empty(after_open), String::new()),
    }
}

fn non_empty(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinking_off_appends_an_empty_block_only_for_thinking_templates() {
        let p = crate::engine::Prompt::trusted(
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
        );
        assert_eq!(
            with_thinking(p.clone(), false, true).text(),
            format!("{}<think>\n\n</think>\n\n", p.text())
        );
        assert_eq!(with_thinking(p.clone(), true, true), p);
        assert_eq!(with_thinking(p.clone(), false, false), p);
    }

    #[test]
    fn reasoning_is_split_from_the_answer() {
        assert_eq!(
            split_reasoning("<think>\nLet me see.\n</think>\n\nParis."),
            (Some("Let me see.".into()), "Paris.".into())
        );
        assert_eq!(
            split_reasoning("<think>\n\n</think>\n\nParis."),
            (None, "Paris.".into())
        );
        assert_eq!(split_reasoning("  Paris. "), (None, "Paris.".into()));
        assert_eq!(
            split_reasoning("<think>cut short"),
            (Some("cut short".into()), String::new())
        );
        assert_eq!(
            split_reasoning("hmm</think>answer"),
            (Some("hmm".into()), "answer".into())
        );
    }

    #[test]
    fn custom_prompt_places_the_text() {
        let t = Task::Custom {
            prompt: "Translate: {text} now".into(),
        };
        assert_eq!(task_instruction(&t, "abc"), "Translate: abc now");
        let t = Task::Custom {
            prompt: "Translate".into(),
        };
        assert_eq!(task_instruction(&t, "abc"), "Translate\n\nabc");
    }

    #[test]
    fn presets_carry_their_arguments_and_the_text() {
        let c = task_instruction(
            &Task::Classify {
                labels: vec!["a".into(), "b".into()],
            },
            "DOC",
        );
        assert!(c.contains("a, b") && c.ends_with("DOC"));
        let e = task_instruction(
            &Task::Extract {
                fields: vec!["name".into(), "date".into()],
            },
            "DOC",
        );
        assert!(e.contains("name, date") && e.contains("JSON"));
    }

    #[test]
    fn system_prompt_comes_first() {
        let m = task_messages(&Task::Summarize, Some("be brief"), "x");
        assert_eq!(m[0].role, "system");
        assert_eq!(m[1].role, "user");
        let r = reduce_messages(&Task::Summarize, None, &["one".into(), "two".into()]);
        assert_eq!(r.len(), 1);
        assert!(r[0].content.contains("Part 1:\none") && r[0].content.contains("Part 2:\ntwo"));
    }

    #[test]
    fn chat_tasks_send_the_users_messages() {
        let messages = vec![ChatMessage {
            role: "user".into(),
            content: "hello".into(),
        }];
        let (text, turns) = crate::job::chat_document(&messages);
        let t = Task::Chat { turns };
        assert_eq!(task_messages(&t, None, &text), messages);
        let with_system = task_messages(&t, Some("sys"), &text);
        assert_eq!(with_system[0].role, "system");
        assert_eq!(with_system[1..], messages[..]);
    }
}
