//! Qwen3's thinking split from the answer while the text is still being generated, for
//! interactive chats: streamed pieces are reasoning (`reasoning_content`, as llama-server
//! streams it) or answer (`content`), and however the text arrives in pieces, they add up to
//! what one look at the whole text gives — so a streamed answer is the non-streamed one. Pure.
//!
//! The rules are [`split_reasoning`](super::templates::split_reasoning)'s, which batch results
//! use: a `<think>…</think>` block at the start is reasoning; an unclosed one (generation cut
//! short) is all reasoning; each part is trimmed. One difference: the whole text is not known
//! while it streams, so whether the reasoning's opening tag is already in the prompt is told,
//! not guessed from a `</think>` that may come later ([`Split::new`]).

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// A piece of the text that may be shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Reasoning(String),
    Answer(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing but whitespace yet, or the start of what may be `<think>`.
    Lead,
    Reasoning,
    Answer,
}

/// The splitter of one generation.
#[derive(Debug, Clone)]
pub struct Split {
    phase: Phase,
    /// Text not given out yet: leading whitespace, what may be the start of a tag, a part's
    /// trailing whitespace (given out only when more text follows it in the same part).
    held: String,
    /// The current part gave text out already (its leading whitespace is behind it).
    started: bool,
    /// Everything given out, per part: the answer a non-streamed request gets.
    reasoning: String,
    answer: String,
}

impl Split {
    /// `opened`: the prompt ends inside a thinking block (a template that opens it for the
    /// model), so the text starts as reasoning.
    pub fn new(opened: bool) -> Split {
        Split {
            phase: if opened {
                Phase::Reasoning
            } else {
                Phase::Lead
            },
            held: String::new(),
            started: false,
            reasoning: String::new(),
            answer: String::new(),
        }
    }

    /// More generated text; the pieces that may be shown now go to `out`.
    pub fn push(&mut self, text: &str, out: &mut Vec<Piece>) {
        self.held.push_str(text);
        loop {
            match self.phase {
                Phase::Lead => {
                    let t = self.held.trim_start();
                    if let Some(rest) = t.strip_prefix(OPEN) {
                        self.held = rest.to_string();
                        self.enter(Phase::Reasoning);
                        continue;
                    }
                    if OPEN.starts_with(t) {
                        // Whitespace only, or a tag's beginning: wait for more.
                        self.held = t.to_string();
                        return;
                    }
                    self.held = t.to_string();
                    self.enter(Phase::Answer);
                }
                Phase::Reasoning => {
                    if let Some(i) = self.held.find(CLOSE) {
                        let keep = self.held[..i].trim_end().len();
                        self.give(keep, out);
                        self.held.drain(..i - keep + CLOSE.len());
                        self.enter(Phase::Answer);
                        continue;
                    }
                    // Hold back what may be the closing tag's beginning, and whitespace.
                    let tag = (1..CLOSE.len())
                        .rev()
                        .find(|&k| self.held.ends_with(&CLOSE[..k]))
                        .unwrap_or(0);
                    let n = self.held[..self.held.len() - tag].trim_end().len();
                    self.give(n, out);
                    return;
                }
                Phase::Answer => {
                    let n = self.held.trim_end().len();
                    self.give(n, out);
                    return;
                }
            }
        }
    }

    /// The generation ended: what was held back and belongs to the text goes to `out`; the
    /// whole (reasoning, answer).
    pub fn finish(mut self, out: &mut Vec<Piece>) -> (Option<String>, String) {
        match self.phase {
            // A tag's beginning and nothing more: it was answer text.
            Phase::Lead => {
                self.held = self.held.trim().to_string();
                self.enter(Phase::Answer);
                self.give(self.held.len(), out);
            }
            // An unclosed block: the rest of it (what looked like a closing tag too).
            Phase::Reasoning => self.give(self.held.trim_end().len(), out),
            Phase::Answer => {}
        }
        let reasoning = (!self.reasoning.is_empty()).then_some(self.reasoning);
        (reasoning, self.answer)
    }

    /// Some text was given out (it cannot be taken back).
    pub fn shown(&self) -> bool {
        !self.reasoning.is_empty() || !self.answer.is_empty()
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.started = false;
    }

    /// Give out the first `n` bytes held (a character boundary), less the part's leading
    /// whitespace.
    fn give(&mut self, n: usize, out: &mut Vec<Piece>) {
        let text: String = self.held.drain(..n).collect();
        let text = if self.started {
            &text[..]
        } else {
            text.trim_start()
        };
        if text.is_empty() {
            return;
        }
        self.started = true;
        let piece = if self.phase == Phase::Reasoning {
            self.reasoning.push_str(text);
            Piece::Reasoning(text.to_string())
        } else {
            self.answer.push_str(text);
            Piece::Answer(text.to_string())
        };
        out.push(piece);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::templates::split_reasoning;
    use crate::fuzz::Rng;

    /// `text` given in pieces cut at `cuts` (character boundaries): the pieces shown, and the
    /// whole (reasoning, answer).
    fn streamed(
        text: &str,
        opened: bool,
        cuts: &[usize],
    ) -> (Vec<Piece>, (Option<String>, String)) {
        let mut s = Split::new(opened);
        let mut out = Vec::new();
        let mut from = 0;
        for &c in cuts.iter().chain([text.len()].iter()) {
            s.push(&text[from..c], &mut out);
            from = c;
        }
        let whole = s.finish(&mut out);
        (out, whole)
    }

    fn joined(pieces: &[Piece], reasoning: bool) -> String {
        pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Reasoning(t) if reasoning => Some(t.as_str()),
                Piece::Answer(t) if !reasoning => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_cases_split_reasoning_knows_split_the_same_way() {
        for (text, opened) in [
            ("<think>\nLet me see.\n</think>\n\nParis.", false),
            ("<think>\n\n</think>\n\nParis.", false),
            ("  Paris. ", false),
            ("<think>cut short", false),
            ("hmm</think>answer", true),
            ("\thash קטנה_means", false),
            ("<thi", false),
            ("<think>a </thi", false),
        ] {
            let (_, whole) = streamed(text, opened, &[]);
            assert_eq!(whole, split_reasoning(text), "{text:?}");
        }
    }

    /// The property the API rests on: however the text arrives, the pieces shown add up to the
    /// whole split, and that is `split_reasoning`'s wherever the two rules agree (the opening
    /// tag at the start, or told to be in the prompt with one closing tag to come).
    #[test]
    fn pieces_add_up_to_the_whole_for_any_cuts() {
        const BITS: [&str; 12] = [
            "<think>", "</think>", "<th", "ink>", "</", "think", " ", "\n", "a", "é", "b c", "\t",
        ];
        let mut rng = Rng(0x5eed_cafe);
        for case in 0..5000 {
            let n = rng.range(0, 10) as usize;
            let text: String = (0..n)
                .map(|_| BITS[rng.range(0, BITS.len() as u64) as usize])
                .collect();
            let opened = case % 3 == 0;
            let boundaries: Vec<usize> = (1..text.len())
                .filter(|&i| text.is_char_boundary(i))
                .collect();
            let mut cuts: Vec<usize> = boundaries
                .iter()
                .copied()
                .filter(|_| rng.range(0, 3) == 0)
                .collect();
            cuts.dedup();
            let (pieces, whole) = streamed(&text, opened, &cuts);
            let (one_piece, at_once) = streamed(&text, opened, &[]);
            assert_eq!(whole, at_once, "{text:?} cut at {cuts:?}");
            assert_eq!(joined(&pieces, true), at_once.0.clone().unwrap_or_default());
            assert_eq!(
                joined(&pieces, false),
                at_once.1,
                "{text:?} cut at {cuts:?}"
            );
            assert_eq!(joined(&one_piece, false), at_once.1);
            let opens_at_start = text.trim_start().starts_with(OPEN);
            let agree = if opened {
                !text.contains(OPEN) && text.contains(CLOSE)
            } else {
                opens_at_start || !text.contains(CLOSE)
            };
            if agree {
                assert_eq!(at_once, split_reasoning(&text), "{text:?} opened {opened}");
            }
        }
    }
}
