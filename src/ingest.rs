//! Reading documents: files, directories (recursive, with a glob), stdin, and OpenAI Batch API
//! input files. Decides what is text and refuses, with a one-line reason, what is not.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::job::{ChatMessage, Constraint, GenOverrides};

/// The largest document (`max_file_bytes`, `--max-file-bytes`) accepted: one document goes
/// to the worker in one request, which must stay under the socket's frame limit.
pub const MAX_DOCUMENT_BYTES: u64 = 128 << 20;

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("empty")]
    Empty,
    #[error("binary (contains NUL bytes)")]
    Binary,
    #[error("not UTF-8 or UTF-16 text")]
    NotText,
    #[error("too large ({size} bytes; the limit is {limit})")]
    TooLarge { size: u64, limit: u64 },
    #[error("cannot read: {0}")]
    Unreadable(String),
    #[error("its name cannot be a job's custom id: {0}")]
    BadName(String),
}

impl Refusal {
    /// A short word for counting skipped files.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Empty => "empty",
            Refusal::Binary => "binary",
            Refusal::NotText => "not text",
            Refusal::TooLarge { .. } => "too large",
            Refusal::Unreadable(_) => "unreadable",
            Refusal::BadName(_) => "bad name",
        }
    }
}

/// Decode a document: UTF-8 (a BOM is stripped) or UTF-16 with a BOM. NUL bytes mean binary;
/// text of only white space is empty.
pub fn decode_text(bytes: &[u8], limit: u64) -> Result<String, Refusal> {
    if bytes.len() as u64 > limit {
        return Err(Refusal::TooLarge {
            size: bytes.len() as u64,
            limit,
        });
    }
    let text = if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        utf16(rest, u16::from_le_bytes)?
    } else if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        utf16(rest, u16::from_be_bytes)?
    } else {
        let body = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes);
        if body.contains(&0) {
            return Err(Refusal::Binary);
        }
        String::from_utf8(body.to_vec()).map_err(|_| Refusal::NotText)?
    };
    if text.contains('\0') {
        return Err(Refusal::Binary);
    }
    if text.trim().is_empty() {
        return Err(Refusal::Empty);
    }
    Ok(text)
}

fn utf16(bytes: &[u8], word: fn([u8; 2]) -> u16) -> Result<String, Refusal> {
    if bytes.len() % 2 != 0 {
        return Err(Refusal::NotText);
    }
    let units = bytes.chunks_exact(2).map(|c| word([c[0], c[1]]));
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map_err(|_| Refusal::NotText)
}

/// Read and decode a file, checking its size before reading it.
pub fn read_file(path: &Path, limit: u64) -> Result<String, Refusal> {
    let meta = std::fs::metadata(path).map_err(|e| Refusal::Unreadable(e.to_string()))?;
    if meta.len() > limit {
        return Err(Refusal::TooLarge {
            size: meta.len(),
            limit,
        });
    }
    let bytes = std::fs::read(path).map_err(|e| Refusal::Unreadable(e.to_string()))?;
    decode_text(&bytes, limit)
}

/// A file found for enqueueing, with the custom id derived from its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub path: PathBuf,
    /// The file name for a file given directly; the path below the directory for a file
    /// found in one (so `a/notes.txt` and `b/notes.txt` stay apart).
    pub custom_id: String,
    /// Found by walking a directory (refusals are counted, not errors).
    pub in_directory: bool,
    /// An entry of a directory that could not be followed (a dangling symlink, a symlink
    /// loop, no permission): skipped and counted, the rest of the directory goes on.
    pub broken: Option<String>,
}

/// Why a path argument could not be used at all.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("{0}: no such file or directory")]
    Missing(PathBuf),
    #[error("{0}: not a regular file or directory")]
    Special(PathBuf),
    #[error("bad --glob {0:?}: {1}")]
    Glob(String, String),
    #[error("{0}: cannot walk: {1}")]
    Walk(PathBuf, String),
}

/// Expand path arguments: files as they are, directories walked recursively (sorted, hidden
/// entries skipped), keeping files whose name or relative path matches `glob`.
pub fn expand(paths: &[PathBuf], glob: Option<&str>) -> Result<Vec<Found>, PathError> {
    let matcher = match glob {
        Some(g) => Some(
            globset::GlobBuilder::new(g)
                .literal_separator(false)
                .build()
                .map_err(|e| PathError::Glob(g.into(), e.to_string()))?
                .compile_matcher(),
        ),
        None => None,
    };
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|_| PathError::Missing(p.clone()))?;
        if meta.is_file() {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push(Found {
                path: p.clone(),
                custom_id: name,
                in_directory: false,
                broken: None,
            });
        } else if meta.is_dir() {
            let walker = walkdir::WalkDir::new(p)
                .follow_links(true)
                .sort_by_file_name()
                .into_iter()
                .filter_entry(|e| {
                    e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.')
                });
            for entry in walker {
                let entry = match entry {
                    Ok(entry) => entry,
                    // The directory itself cannot be walked: the whole argument fails.
                    Err(e) if e.depth() == 0 => {
                        return Err(PathError::Walk(p.clone(), e.to_string()))
                    }
                    Err(e) => {
                        let path = e.path().unwrap_or(p).to_path_buf();
                        let rel = path.strip_prefix(p).unwrap_or(&path);
                        let name = path.file_name().unwrap_or_default();
                        if let Some(m) = &matcher {
                            if !m.is_match(rel) && !m.is_match(name) {
                                continue;
                            }
                        }
                        let custom_id = rel.to_string_lossy().into_owned();
                        let why = match e.loop_ancestor() {
                            Some(_) => "a symlink loop".to_string(),
                            None => e
                                .io_error()
                                .map_or_else(|| e.to_string(), |io| io.to_string()),
                        };
                        out.push(Found {
                            custom_id,
                            path,
                            in_directory: true,
                            broken: Some(why),
                        });
                        continue;
                    }
                };
                if !entry.file_type().is_file() {
                    continue;
                }
                let rel = entry
                    .path()
                    .strip_prefix(p)
                    .unwrap_or(entry.path())
                    .to_path_buf();
                if let Some(m) = &matcher {
                    if !m.is_match(&rel) && !m.is_match(entry.file_name()) {
                        continue;
                    }
                }
                out.push(Found {
                    path: entry.path().to_path_buf(),
                    custom_id: rel.to_string_lossy().into_owned(),
                    in_directory: true,
                    broken: None,
                });
            }
        } else {
            return Err(PathError::Special(p.clone()));
        }
    }
    Ok(out)
}

/// The custom ids met so far in a batch file, each with its line: a file's ids must be
/// unique. Kept as 128-bit hashes, so that a file of a million requests costs tens of MB, not
/// its ids' bytes.
#[derive(Default)]
pub struct SeenIds(std::collections::HashMap<[u8; 16], usize>);

impl SeenIds {
    /// Note `id` on `line`; the line it was first seen on, if it was.
    pub fn see(&mut self, id: &str, line: usize) -> Option<usize> {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(id.as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        match self.0.entry(key) {
            std::collections::hash_map::Entry::Occupied(first) => Some(*first.get()),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(line);
                None
            }
        }
    }
}

/// One good line of an OpenAI Batch API input file.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchItem {
    pub custom_id: String,
    /// The body's `model`, if any (the HTTP API resolves it; the CLI's `--model` decides).
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    pub gen: GenOverrides,
    /// Body fields not acted on, kept verbatim (JSON text).
    pub extra: Option<String>,
    /// `response_format`: a JSON schema (or any JSON object) the answer must follow.
    pub constraint: Option<Constraint>,
}

/// The lines of a batch file, read one at a time (a file of any length, never held whole):
/// each is (its number from 1, its text or why it cannot be read). A line over `limit`
/// bytes is reported and skipped without being buffered; a UTF-8 BOM opening the file is
/// dropped; blank lines are skipped.
pub struct BatchLines<R> {
    reader: R,
    limit: u64,
    number: usize,
    /// A read failed: the file ends there (a failing read would fail again, forever).
    done: bool,
}

impl<R: std::io::BufRead> BatchLines<R> {
    pub fn new(reader: R, limit: u64) -> Self {
        BatchLines {
            reader,
            limit,
            number: 0,
            done: false,
        }
    }
}

impl<R: std::io::BufRead> Iterator for BatchLines<R> {
    type Item = (usize, Result<String, String>);

    fn next(&mut self) -> Option<Self::Item> {
        use std::io::{BufRead, Read};
        if self.done {
            return None;
        }
        loop {
            self.number += 1;
            let mut buf = Vec::new();
            // The limit is on the line's text: its line ending (\n or \r\n) comes on top.
            let n = match (&mut self.reader)
                .take(self.limit + 2)
                .read_until(b'\n', &mut buf)
            {
                Ok(0) => return None,
                Ok(n) => n,
                Err(e) => {
                    self.done = true;
                    return Some((self.number, Err(format!("cannot read: {e}"))));
                }
            };
            let ending = match buf.as_slice() {
                [.., b'\r', b'\n'] => 2,
                [.., b'\n'] => 1,
                _ => 0,
            };
            if (n - ending) as u64 > self.limit {
                // Skip the rest of the line without keeping it.
                let mut sink = Vec::new();
                loop {
                    sink.clear();
                    match (&mut self.reader)
                        .take(1 << 20)
                        .read_until(b'\n', &mut sink)
                    {
                        Ok(0) => break,
                        Ok(_) if sink.last() == Some(&b'\n') => break,
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                let why = format!("the line is over {} bytes (max_file_bytes)", self.limit);
                return Some((self.number, Err(why)));
            }
            if self.number == 1 && buf.starts_with(b"\xEF\xBB\xBF") {
                buf.drain(..3);
            }
            if self.number == 1 && (buf.starts_with(b"\xFF\xFE") || buf.starts_with(b"\xFE\xFF")) {
                self.done = true;
                let why = "UTF-16: a batch file is UTF-8 JSON lines, as OpenAI's";
                return Some((self.number, Err(why.into())));
            }
            let text = match String::from_utf8(buf) {
                Ok(t) => t,
                Err(_) => return Some((self.number, Err("not UTF-8".into()))),
            };
            if text.trim().is_empty() {
                continue;
            }
            return Some((
                self.number,
                Ok(text.trim_end_matches(['\n', '\r']).to_string()),
            ));
        }
    }
}

/// Parse one line of a batch file: `{"custom_id", "method": "POST", "url":
/// "/v1/chat/completions", "body": {"messages", …}}`.
pub fn parse_batch_line(line: &str) -> Result<BatchItem, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let custom_id = obj
        .get("custom_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or("missing custom_id")?
        .to_string();
    crate::job::check_custom_id(&custom_id)?;
    if let Some(m) = obj.get("method").and_then(Value::as_str) {
        if !m.eq_ignore_ascii_case("POST") {
            return Err(format!("method {m:?} (only POST)"));
        }
    }
    match obj.get("url").and_then(Value::as_str) {
        Some("/v1/chat/completions") | None => {}
        Some(other) => return Err(format!("url {other:?} (only /v1/chat/completions)")),
    }
    let body = obj
        .get("body")
        .and_then(Value::as_object)
        .ok_or("missing body")?;
    let body = parse_chat_body(body, &[])?;
    Ok(BatchItem {
        custom_id,
        model: body.model,
        messages: body.messages,
        gen: body.gen,
        extra: (!body.extra.is_empty()).then(|| Value::Object(body.extra).to_string()),
        constraint: body.constraint,
    })
}

/// The body of a chat completion request, as a batch line and `POST /v1/chat/completions`
/// both carry it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatBody {
    /// `model`, if given.
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    pub gen: GenOverrides,
    /// `response_format`: a JSON schema (or any JSON object) the answer must follow.
    pub constraint: Option<Constraint>,
    /// Fields not read here and not among `also_known`, kept verbatim.
    pub extra: serde_json::Map<String, Value>,
}

/// Parse a chat completion body: `messages` (text content; text parts of content arrays
/// joined), `max_completion_tokens`/`max_tokens`, `temperature`, `top_p`, `top_k`, `min_p`,
/// `seed`, `model`, `response_format`. Fields named in `also_known` are the caller's to read
/// (the HTTP API's `stream`, `stop`); others go to `extra`.
pub fn parse_chat_body(
    body: &serde_json::Map<String, Value>,
    also_known: &[&str],
) -> Result<ChatBody, String> {
    let raw_messages = body
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or("body has no messages")?;
    let mut messages = Vec::with_capacity(raw_messages.len());
    for (i, m) in raw_messages.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or(format!("message {i} has no role"))?;
        if role.is_empty()
            || role.len() > crate::job::MAX_ROLE
            || role.chars().any(char::is_control)
        {
            return Err(format!(
                "message {i} has the role {:?} (1 to {} printable bytes: system, user, assistant…)",
                crate::job::printable(&role.chars().take(80).collect::<String>()),
                crate::job::MAX_ROLE
            ));
        }
        let content = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            // Content parts: keep the text parts.
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
            _ => return Err(format!("message {i} has no text content")),
        };
        if content.contains('\0') {
            return Err(format!("message {i} contains NUL bytes"));
        }
        messages.push(ChatMessage {
            role: role.to_string(),
            content,
        });
    }
    let num = |k: &str| body.get(k).and_then(Value::as_f64);
    let max_tokens = num("max_completion_tokens").or_else(|| num("max_tokens"));
    let known = [
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "seed",
        "model",
        "response_format",
    ];
    let constraint = match body.get("response_format") {
        None | Some(Value::Null) => None,
        Some(rf) => response_format(rf)?,
    };
    let extra: serde_json::Map<String, Value> = body
        .iter()
        .filter(|(k, _)| !known.contains(&k.as_str()) && !also_known.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let model = match body.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(m)) if !m.is_empty() && m.len() <= 256 => Some(m.clone()),
        Some(_) => return Err("\"model\" must be a model's name".into()),
    };
    Ok(ChatBody {
        model,
        messages,
        gen: GenOverrides {
            max_tokens: max_tokens.map(|n| n as u32),
            temperature: num("temperature").map(|x| x as f32),
            top_p: num("top_p").map(|x| x as f32),
            top_k: num("top_k").map(|x| x as i32),
            min_p: num("min_p").map(|x| x as f32),
            seed: num("seed").map(|x| x as u32),
        },
        constraint,
        extra,
    })
}

/// OpenAI's `response_format`: `{"type": "text"}`, `{"type": "json_object"}` (any JSON
/// object) or `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`.
fn response_format(rf: &Value) -> Result<Option<Constraint>, String> {
    match rf.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Constraint::JsonSchema(r#"{"type":"object"}"#.into()))),
        Some("json_schema") => {
            let schema = rf
                .get("json_schema")
                .and_then(|j| j.get("schema"))
                .ok_or("response_format json_schema has no json_schema.schema")?;
            Constraint::json_schema(&schema.to_string()).map(Some)
        }
        Some(other) => Err(format!(
            "response_format type {other:?} (text, json_object or json_schema)"
        )),
        None => Err("response_format has no type".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_utf8_and_utf16_and_refuses_the_rest() {
        assert_eq!(decode_text(b"hello", 100).unwrap(), "hello");
        assert_eq!(decode_text(b"\xEF\xBB\xBFhello", 100).unwrap(), "hello");
        let le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("héllo".encode_utf16().flat_map(|u| u.to_le_bytes()))
            .collect();
        assert_eq!(decode_text(&le, 100).unwrap(), "héllo");
        let be: Vec<u8> = [0xFE, 0xFF]
            .into_iter()
            .chain("héllo".encode_utf16().flat_map(|u| u.to_be_bytes()))
            .collect();
        assert_eq!(decode_text(&be, 100).unwrap(), "héllo");
        assert_eq!(decode_text(b"a\0b", 100), Err(Refusal::Binary));
        assert_eq!(decode_text(b"\xff\xfa\xfb", 100), Err(Refusal::NotText));
        assert_eq!(decode_text(b"", 100), Err(Refusal::Empty));
        assert_eq!(decode_text(b" \n\t ", 100), Err(Refusal::Empty));
        assert_eq!(
            decode_text(b"12345", 4),
            Err(Refusal::TooLarge { size: 5, limit: 4 })
        );
        assert_eq!(decode_text(&[0xFF, 0xFE, 0x41], 100), Err(Refusal::NotText));
    }

    #[test]
    fn expands_directories_with_a_glob_and_names_by_relative_path() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a")).unwrap();
        std::fs::create_dir_all(d.path().join(".hidden")).unwrap();
        std::fs::write(d.path().join("a/x.md"), "x").unwrap();
        std::fs::write(d.path().join("b.md"), "b").unwrap();
        std::fs::write(d.path().join("c.txt"), "c").unwrap();
        std::fs::write(d.path().join(".hidden/h.md"), "h").unwrap();
        let found = expand(&[d.path().to_path_buf()], Some("*.md")).unwrap();
        let ids: Vec<_> = found.iter().map(|f| f.custom_id.as_str()).collect();
        assert_eq!(ids, vec!["a/x.md", "b.md"]);
        assert!(found.iter().all(|f| f.in_directory));
        let all = expand(&[d.path().to_path_buf()], None).unwrap();
        assert_eq!(all.len(), 3);
        let file = expand(&[d.path().join("c.txt")], None).unwrap();
        assert_eq!(file[0].custom_id, "c.txt");
        assert!(!file[0].in_directory);
        assert!(matches!(
            expand(&[d.path().join("nope")], None),
            Err(PathError::Missing(_))
        ));
        assert!(matches!(
            expand(&[d.path().to_path_buf()], Some("[")),
            Err(PathError::Glob(..))
        ));
    }

    #[test]
    fn parses_openai_batch_lines() {
        let line = r#"{"custom_id":"r1","method":"POST","url":"/v1/chat/completions","body":{"model":"x","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"max_completion_tokens":30,"temperature":0.2,"seed":7,"logprobs":true}}"#;
        let item = parse_batch_line(line).unwrap();
        assert_eq!(item.custom_id, "r1");
        assert_eq!(item.messages.len(), 2);
        assert_eq!(item.gen.max_tokens, Some(30));
        assert_eq!(item.gen.temperature, Some(0.2));
        assert_eq!(item.gen.seed, Some(7));
        assert_eq!(item.extra.as_deref(), Some(r#"{"logprobs":true}"#));
        let legacy = r#"{"custom_id":"r2","body":{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],"max_tokens":5}}"#;
        let item = parse_batch_line(legacy).unwrap();
        assert_eq!(item.messages[0].content, "a\nb");
        assert_eq!(item.gen.max_tokens, Some(5));
        assert_eq!(item.extra, None);
    }

    #[test]
    fn batch_lines_stream_with_a_limit_a_line_and_skip_blank_ones() {
        let long = "x".repeat(100);
        let text = format!("\u{feff}first\r\n\n  \n{long}\nthird\n\u{ff}-not-utf8\nlast");
        let mut bytes = text.into_bytes();
        // Make the sixth line invalid UTF-8: a lone 0xff byte where ÿ's two bytes are.
        let at = bytes
            .windows(2)
            .position(|w| w == "\u{ff}".as_bytes())
            .unwrap();
        bytes.splice(at..at + 2, [0xff]);
        let lines: Vec<(usize, Result<String, String>)> =
            BatchLines::new(std::io::Cursor::new(bytes), 50).collect();
        assert_eq!(lines[0], (1, Ok("first".into())));
        assert_eq!(lines[1].0, 4);
        assert!(lines[1].1.as_ref().unwrap_err().contains("over 50 bytes"));
        assert_eq!(lines[2], (5, Ok("third".into())));
        assert_eq!(lines[3], (6, Err("not UTF-8".into())));
        assert_eq!(lines[4], (7, Ok("last".into())));
        assert_eq!(lines.len(), 5);
        // A line of exactly the limit, with a CRLF ending: accepted.
        let exact = format!("{}\r\nnext\n", "y".repeat(50));
        let lines: Vec<_> = BatchLines::new(std::io::Cursor::new(exact), 50).collect();
        assert_eq!(lines[0], (1, Ok("y".repeat(50))));
        assert_eq!(lines[1], (2, Ok("next".into())));
        // A UTF-16 file: one clear error, then the end (not an error a line).
        let utf16 = b"\xFF\xFEa\x00\n\x00b\x00\n\x00".to_vec();
        let lines: Vec<_> = BatchLines::new(std::io::Cursor::new(utf16), 50).collect();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].1.as_ref().unwrap_err().contains("UTF-16"));
    }

    #[test]
    fn batch_lines_end_at_a_failing_read() {
        struct Failing;
        impl std::io::Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::from_raw_os_error(libc::EISDIR))
            }
        }
        let lines: Vec<_> = BatchLines::new(std::io::BufReader::new(Failing), 50).collect();
        assert_eq!(lines.len(), 1, "one error, then the end");
    }

    #[test]
    fn batch_line_errors_say_what_is_wrong() {
        assert!(parse_batch_line("{").unwrap_err().starts_with("not JSON"));
        assert_eq!(parse_batch_line("[1]").unwrap_err(), "not a JSON object");
        assert_eq!(
            parse_batch_line(r#"{"body":{}}"#).unwrap_err(),
            "missing custom_id"
        );
        assert_eq!(
            parse_batch_line(r#"{"custom_id":"a"}"#).unwrap_err(),
            "missing body"
        );
        assert_eq!(
            parse_batch_line(r#"{"custom_id":"a","body":{"messages":[]}}"#).unwrap_err(),
            "body has no messages"
        );
        assert!(parse_batch_line(r#"{"custom_id":"a","url":"/v1/embeddings","body":{"messages":[{"role":"user","content":"x"}]}}"#)
            .unwrap_err()
            .contains("embeddings"));
        let role = |r: &str| {
            let line = serde_json::json!({"custom_id": "a", "body": {"messages": [
                {"role": r, "content": "x"}]}});
            parse_batch_line(&line.to_string())
        };
        assert!(role("developer").is_ok());
        for bad in ["", "user\n", "esc\u{1b}[1m", &"r".repeat(65)] {
            let err = role(bad).unwrap_err();
            assert!(err.starts_with("message 0 has the role"), "{err}");
            assert!(!err.contains('\u{1b}'), "{err:?}");
        }
    }

    #[test]
    fn a_batch_files_ids_are_seen_once_with_their_first_line() {
        let mut seen = SeenIds::default();
        assert_eq!(seen.see("a", 1), None);
        assert_eq!(seen.see("b", 2), None);
        assert_eq!(seen.see("a", 7), Some(1));
        assert_eq!(seen.see("a", 9), Some(1));
    }
}
