//! Prompts as llama.cpp sees them: rendered through the chat template with the messages'
//! contents held apart, and tokenized piece by piece — special tokens parsed in the template's
//! own text only. A document holding `<|im_end|>\n<|im_start|>system\n…` stays text: it cannot
//! close its turn or open a system one.
//!
//! Rendering puts a sentinel (private-use characters no content holds) where each content goes,
//! renders, and splits the result at the sentinels. A template that trims contents (found by a
//! probe when the model loads) gets them trimmed.

use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;

use qwen3q::engine::{EngineError, Piece, Prompt};
use qwen3q::job::ChatMessage;

/// A marker that none of `texts` contains.
fn sentinel(texts: &[&str]) -> String {
    (0u32..)
        .map(|n| format!("\u{E000}q3s{n}\u{E001}"))
        .find(|s| !texts.iter().any(|t| t.contains(s.as_str())))
        .expect("some marker is free")
}

fn apply(
    model: &LlamaModel,
    template: &LlamaChatTemplate,
    messages: &[(String, String)],
) -> Result<String, EngineError> {
    let chat = messages
        .iter()
        .map(|(role, content)| LlamaChatMessage::new(role.clone(), content.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| EngineError::Template(e.to_string()))?;
    model
        .apply_chat_template(template, &chat, true)
        .map_err(|e| EngineError::Template(e.to_string()))
}

/// Whether `template` trims what it is given as a message's content.
pub(super) fn template_trims(model: &LlamaModel, template: &LlamaChatTemplate) -> bool {
    let probe = vec![("user".to_string(), " \u{E000}probe\u{E001} ".to_string())];
    match apply(model, template, &probe) {
        Ok(out) => !out.contains(" \u{E000}probe") && out.contains("\u{E000}probe"),
        Err(_) => false,
    }
}

/// The prompt for `messages`, ending with the opening of the assistant's turn.
pub(super) fn render(
    model: &LlamaModel,
    template: &LlamaChatTemplate,
    trims: bool,
    messages: &[ChatMessage],
) -> Result<Prompt, EngineError> {
    let texts: Vec<&str> = messages
        .iter()
        .flat_map(|m| [m.role.as_str(), m.content.as_str()])
        .collect();
    let mark = sentinel(&texts);
    let marked: Vec<(String, String)> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| (m.role.clone(), format!("{mark}{i}{mark}")))
        .collect();
    let rendered = apply(model, template, &marked)?;
    let mut prompt = Prompt::default();
    let mut parts = rendered.split(mark.as_str());
    prompt.push_template(parts.next().unwrap_or_default());
    let mut placed = 0;
    while let Some(index) = parts.next() {
        let after = parts.next();
        let content = index
            .parse::<usize>()
            .ok()
            .and_then(|i| messages.get(i))
            .filter(|_| after.is_some());
        match content {
            Some(m) => {
                let text = if trims { m.content.trim() } else { &m.content };
                if !text.is_empty() {
                    prompt.pieces.push(Piece::Text(text.to_string()));
                }
                placed += 1;
            }
            None => prompt.push_template(index),
        }
        prompt.push_template(after.unwrap_or_default());
    }
    if placed < messages.len() && messages.iter().any(|m| !m.content.is_empty()) {
        // A template that changes contents (no sentinel survived for some message): those
        // contents are not in the prompt as given. Say so rather than guess.
        let dropped = messages.len() - placed;
        tracing::debug!(
            dropped,
            "the chat template did not place every message's content"
        );
    }
    prompt
        .pieces
        .retain(|p| !matches!(p, Piece::Template(t) if t.is_empty()));
    Ok(prompt)
}

/// The tokens llama.cpp decodes for `prompt`: template pieces with special tokens parsed, text
/// pieces as plain text, BOS (when the model wants one) before the first.
pub(super) fn tokens(model: &LlamaModel, prompt: &Prompt) -> Vec<LlamaToken> {
    let vocab = model.vocab();
    let mut out = Vec::new();
    let mut first = true;
    for piece in &prompt.pieces {
        let (text, special) = match piece {
            Piece::Template(t) => (t, true),
            Piece::Text(t) => (t, false),
        };
        if text.is_empty() {
            continue;
        }
        out.extend(vocab.tokenize(text.as_bytes(), first, special));
        first = false;
    }
    out
}
