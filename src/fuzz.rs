//! Mutation fuzzing of the parsers that read outside input: GGUF headers, OpenAI batch lines,
//! socket request lines, and stored values. Each target starts from real seeds, mutates them
//! as a fuzzer would (flipped bits, interesting bytes and words, cuts, copied slices), and
//! feeds the result to the parser and to what is asked of its answer. A panic, an overflow, a
//! stack overflow or a huge allocation is the failure; a clean refusal is the expected
//! outcome. The unit tests run a few thousand cases of each target; `cargo run --release
//! --example fuzz_parsers` runs them for as long as asked (`RELIABILITY.md`).
//!
//! Stable Rust, no coverage guidance: mutations of well-formed seeds reach deep into each
//! format, which is where the bugs found so far were (nesting, sizes, lengths).

use std::io::Cursor;

/// A small deterministic generator (xorshift64): the same seed gives the same cases.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    /// A number in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
}

/// Change `b` as a fuzzer would: one to four of flipped bits, interesting bytes, interesting
/// little-endian words, cuts, copied slices, random small numbers.
pub fn mutate(b: &mut Vec<u8>, rng: &mut Rng) {
    const WORDS: [u64; 10] = [
        0,
        1,
        9,
        1 << 24,
        (1 << 24) + 1,
        1 << 32,
        (1 << 62) - 1,
        i64::MAX as u64,
        u64::MAX - 16,
        u64::MAX,
    ];
    const BYTES: [u8; 10] = [0, 0xff, 0x7f, 0x80, 9, 8, b'"', b'{', b'[', b'\\'];
    for _ in 0..1 + rng.below(4) {
        if b.is_empty() {
            b.push(0);
        }
        let at = rng.below(b.len());
        match rng.below(7) {
            0 => b[at] ^= 1 << rng.below(8),
            1 => b[at] = BYTES[rng.below(BYTES.len())],
            2 => {
                let w = WORDS[rng.below(WORDS.len())].to_le_bytes();
                let end = (at + 8).min(b.len());
                b[at..end].copy_from_slice(&w[..end - at]);
            }
            3 => b.truncate(at),
            4 => {
                let len = rng.below(64);
                let piece: Vec<u8> = b[at..(at + len).min(b.len())].to_vec();
                let to = rng.below(b.len());
                b.splice(to..to, piece);
            }
            5 => {
                let digits = rng.next_u64().to_string();
                let to = rng.below(b.len());
                b.splice(to..to, digits.into_bytes());
            }
            _ => {
                let w = (rng.next_u64() % (1 << 20)).to_le_bytes();
                let end = (at + 4).min(b.len());
                b[at..end].copy_from_slice(&w[..end - at]);
            }
        }
    }
}

/// What is fuzzed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Gguf,
    BatchLine,
    Request,
    StoredValue,
}

impl Target {
    pub const ALL: [Target; 4] = [
        Target::Gguf,
        Target::BatchLine,
        Target::Request,
        Target::StoredValue,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Gguf => "GGUF header",
            Target::BatchLine => "OpenAI batch line",
            Target::Request => "socket request line",
            Target::StoredValue => "stored value",
        }
    }

    /// Well-formed inputs to start from.
    pub fn seeds(self) -> Vec<Vec<u8>> {
        match self {
            Target::Gguf => vec![gguf_seed()],
            Target::BatchLine => BATCH_LINES.iter().map(|l| l.as_bytes().to_vec()).collect(),
            Target::Request => request_seeds(),
            Target::StoredValue => stored_seeds(),
        }
    }

    /// Feed `input` to the parser and question what it accepts. Returns whether it was
    /// accepted; panics only on a defect.
    pub fn exercise(self, input: &[u8]) -> bool {
        match self {
            Target::Gguf => match crate::engine::gguf::read_header(Cursor::new(input)) {
                Ok(h) => {
                    let facts = h.facts(input.len() as u64);
                    let _ = (h.required_size(), h.weight_bytes(), h.architecture());
                    let _ = facts
                        .predict(4096, 4, crate::engine::memory::Graph::default())
                        .total();
                    true
                }
                Err(_) => false,
            },
            Target::BatchLine => {
                let line = String::from_utf8_lossy(input);
                crate::ingest::parse_batch_line(&line).is_ok()
            }
            Target::Request => {
                let line = String::from_utf8_lossy(input);
                serde_json::from_str::<crate::protocol::Envelope>(&line).is_ok()
            }
            Target::StoredValue => {
                use crate::queue::codec::decode;
                let job = decode::<crate::job::Job>(input).is_ok();
                let result = decode::<crate::job::JobResult>(input).is_ok();
                let state = decode::<crate::job::JobState>(input).is_ok();
                // A chat's turns against its document (schema 5), as a claimed job reads them.
                let chat = decode::<(Vec<crate::job::Turn>, String)>(input)
                    .is_ok_and(|(turns, text)| crate::job::chat_messages(&turns, &text).is_ok());
                // Where a large document lives (schema 6): the record, then the name it gives.
                let file = decode::<crate::queue::sled::files::DocFile>(input)
                    .is_ok_and(|d| crate::queue::sled::files::valid_name(&d.name));
                // A batch and its counts (schema 9), as `batches` and `status` read them.
                let batch = decode::<crate::batch::BatchRecord>(input).is_ok_and(|r| {
                    let counts = decode::<crate::job::Counts>(input).unwrap_or_default();
                    crate::batch::status(&r, &counts);
                    true
                });
                job || result || state || chat || file || batch
            }
        }
    }

    /// Run `cases` mutants from the seeds; (cases accepted by the parser, cases run).
    pub fn run(self, rng: &mut Rng, cases: u64) -> (u64, u64) {
        let seeds = self.seeds();
        let mut accepted = 0;
        for i in 0..cases {
            let mut b = seeds[(i as usize) % seeds.len()].clone();
            mutate(&mut b, rng);
            accepted += self.exercise(&b) as u64;
        }
        (accepted, cases)
    }
}

/// Batch lines as users write them: plain, with content parts, with a JSON schema.
const BATCH_LINES: [&str; 3] = [
    r#"{"custom_id":"a-1","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Summarize: the river rose."}],"max_tokens":64,"temperature":0.2,"seed":7}}"#,
    r#"{"custom_id":"b","body":{"messages":[{"role":"user","content":[{"type":"text","text":"part one"},{"type":"text","text":"part two"}]}],"top_p":0.9,"top_k":20,"min_p":0.05,"user":"x"}}"#,
    r#"{"custom_id":"c","body":{"messages":[{"role":"user","content":"Extract."}],"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object","properties":{"name":{"type":"string"},"n":{"type":"integer"}},"required":["name"]}}}}}"#,
];

fn request_seeds() -> Vec<Vec<u8>> {
    use crate::protocol::{Envelope, Request, Selector, PROTOCOL_VERSION};
    let requests = [
        Request::Status,
        Request::Cancel(vec![
            Selector::Id(crate::job::JobId(3)),
            Selector::CustomId("a.txt".into()),
        ]),
        Request::Retry {
            selectors: vec![Selector::CustomId("x".into())],
            all_failed: true,
        },
        Request::Prune {
            before: 1_700_000_000_000,
        },
        Request::MemoryHistory { since: 5 },
        Request::List(crate::queue::JobFilter::default()),
    ];
    requests
        .into_iter()
        .map(|request| {
            serde_json::to_vec(&Envelope {
                version: PROTOCOL_VERSION,
                request,
            })
            .expect("a request encodes")
        })
        .collect()
}

fn stored_seeds() -> Vec<Vec<u8>> {
    use crate::job::{chat_document, ChatMessage, GenParams, Job, JobId, JobSpec, JobState};
    use crate::job::{ModelRef, Task, Usage};
    use crate::queue::codec::encode;
    let (text, turns) = chat_document(&[
        ChatMessage {
            role: "system".into(),
            content: "Be brief.".into(),
        },
        ChatMessage {
            role: "user".into(),
            content: "Name a river.\nuser: and a sea.".into(),
        },
    ]);
    let chat = Job {
        id: JobId(7),
        spec: JobSpec {
            custom_id: "req-1".into(),
            source: "batch.jsonl:1".into(),
            doc_sha256: crate::job::document_sha256(&text),
            doc_bytes: text.len() as u64,
            task: Task::Chat {
                turns: turns.clone(),
            },
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
            extra_json: Some(r#"{"user":"x"}"#.into()),
            constraint: None,
            fallback: vec![],
            auto: None,
        },
        state: JobState::Queued,
        attempts: 0,
        enqueued: 1,
        updated: 1,
        batch: Some(crate::job::BatchId(3)),
        deadline: Some(99),
    };
    let batch = crate::batch::BatchRecord::new(
        crate::job::BatchId(3),
        &crate::batch::NewBatch {
            name: Some("night".into()),
            metadata: vec![("team".into(), "ops".into())],
            deadline: Some(99),
            source: "--batch night.jsonl".into(),
            api: None,
        },
        1,
    );
    vec![
        encode(&chat).expect("encodes"),
        encode(&batch).expect("encodes"),
        encode(&(turns, text)).expect("encodes"),
        encode(&JobState::Queued).expect("encodes"),
        encode(&JobState::Succeeded {
            finished: 9,
            usage: Usage {
                prompt_tokens: 100,
                completion_tokens: 20,
            },
        })
        .expect("encodes"),
        encode(&JobState::Failed {
            attempt: 2,
            error: "llama.cpp decode failed".into(),
            next_attempt_at: 77,
        })
        .expect("encodes"),
        encode(&crate::queue::sled::files::DocFile {
            name: "0123456789abcdef0123456789abcdef".into(),
            bytes: 70_000,
            sha256: [7; 32],
        })
        .expect("encodes"),
    ]
}

/// A GGUF header with a value of every type, an array of strings, an array of arrays, and
/// tensors of three types, with its data.
pub fn gguf_seed() -> Vec<u8> {
    fn s(out: &mut Vec<u8>, v: &str) {
        out.extend((v.len() as u64).to_le_bytes());
        out.extend(v.as_bytes());
    }
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(3u64.to_le_bytes()); // tensors
    b.extend(15u64.to_le_bytes()); // keys
    s(&mut b, "general.architecture");
    b.extend(8u32.to_le_bytes());
    s(&mut b, "gemma3");
    let scalars: [(u32, &[u8]); 11] = [
        (0, &[7]),
        (1, &[0xf9]),
        (2, &[1, 2]),
        (3, &[3, 4]),
        (4, &[0, 16, 0, 0]),
        (5, &[5, 0, 0, 0]),
        (6, &[0, 0, 0x80, 0x3f]),
        (7, &[1]),
        (10, &[0, 0, 0, 0, 1, 0, 0, 0]),
        (11, &[255; 8]),
        (12, &[0, 0, 0, 0, 0, 0, 0xf0, 0x3f]),
    ];
    for (i, (ty, bytes)) in scalars.iter().enumerate() {
        s(&mut b, &format!("gemma3.key{i}"));
        b.extend(ty.to_le_bytes());
        b.extend(*bytes);
    }
    s(&mut b, "tokenizer.ggml.tokens");
    b.extend(9u32.to_le_bytes());
    b.extend(8u32.to_le_bytes());
    b.extend(12u64.to_le_bytes());
    for i in 0..12 {
        s(&mut b, &format!("tok{i}"));
    }
    s(&mut b, "nested");
    b.extend(9u32.to_le_bytes());
    b.extend(9u32.to_le_bytes());
    b.extend(2u64.to_le_bytes());
    for _ in 0..2 {
        b.extend(4u32.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        b.extend([1, 0, 0, 0, 2, 0, 0, 0]);
    }
    s(&mut b, "general.alignment");
    b.extend(4u32.to_le_bytes());
    b.extend(32u32.to_le_bytes());
    let mut offset = 0u64;
    for (name, ty, dims, bytes) in [
        ("a", 0u32, vec![4u64, 2], 32u64),
        ("b", 2, vec![32], 18),
        ("c", 14, vec![256, 1], 210),
    ] {
        s(&mut b, name);
        b.extend((dims.len() as u32).to_le_bytes());
        for d in &dims {
            b.extend(d.to_le_bytes());
        }
        b.extend(ty.to_le_bytes());
        b.extend(offset.to_le_bytes());
        offset += bytes.next_multiple_of(32);
    }
    while b.len() % 32 != 0 {
        b.push(0);
    }
    b.extend(vec![0u8; offset as usize]);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_is_accepted_as_it_is() {
        for t in Target::ALL {
            for seed in t.seeds() {
                assert!(t.exercise(&seed), "{}: a seed is refused", t.name());
            }
        }
    }

    #[test]
    fn thousands_of_mutants_of_each_target_never_panic() {
        let mut rng = Rng(0x5eed_2026_1201);
        for t in Target::ALL {
            let (accepted, cases) = t.run(&mut rng, 3000);
            // Mutants reach past the first check: a share of them still parses.
            assert!(
                accepted > 0 && accepted < cases,
                "{}: {accepted} of {cases} accepted",
                t.name()
            );
        }
    }
}
