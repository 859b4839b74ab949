//! Files uploaded through the HTTP API (OpenAI's Files API, `purpose=batch`): what is known of
//! one, and the limits OpenAI sets. The text itself lives in the store. Pure.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::job::{BatchId, Millis};

/// The largest upload, in bytes (OpenAI's 200 MB for a batch input file).
pub const MAX_UPLOAD_BYTES: u64 = 200_000_000;
/// The most lines (requests) a batch input file may hold (OpenAI's 50,000).
pub const MAX_UPLOAD_LINES: u64 = 50_000;
/// The longest file name kept, in characters.
pub const MAX_FILENAME: usize = 255;

/// An uploaded file's number (schema 9), shown as OpenAI names files: `file-12`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FileId(pub u64);

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "file-{}", self.0)
    }
}

impl FromStr for FileId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.strip_prefix("file-")
            .and_then(|n| n.parse().ok())
            .map(FileId)
            .ok_or_else(|| format!("{s:?} is not a file id (file-N)"))
    }
}

/// A file the Files API serves: an upload, or the output or error file of a batch (made from
/// its jobs' results when read: nothing is stored twice). `file-12`, `file-batch_7-output`,
/// `file-batch_7-errors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileRef {
    Upload(FileId),
    Output(BatchId),
    Errors(BatchId),
}

impl fmt::Display for FileRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileRef::Upload(id) => write!(f, "{id}"),
            FileRef::Output(b) => write!(f, "file-{b}-output"),
            FileRef::Errors(b) => write!(f, "file-{b}-errors"),
        }
    }
}

impl FromStr for FileRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let batch = |rest: &str, suffix: &str| {
            rest.strip_suffix(suffix)
                .and_then(|b| b.strip_prefix("batch_"))
                .and_then(|n| n.parse().ok())
                .map(BatchId)
        };
        if let Some(rest) = s.strip_prefix("file-") {
            if let Some(b) = batch(rest, "-output") {
                return Ok(FileRef::Output(b));
            }
            if let Some(b) = batch(rest, "-errors") {
                return Ok(FileRef::Errors(b));
            }
        }
        s.parse().map(FileRef::Upload)
    }
}

/// What is known of an uploaded file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    pub id: FileId,
    /// As the client named it (control characters replaced), for people.
    pub filename: String,
    /// OpenAI's `purpose`: only `batch` is taken.
    pub purpose: String,
    pub created: Millis,
    pub bytes: u64,
    /// Lines that are not blank: the requests a batch would make of it.
    pub lines: u64,
}

/// Why an upload is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    #[error("the file has more than {MAX_UPLOAD_BYTES} bytes")]
    TooLarge,
    #[error("the file has {0} lines; a batch input file has at most {MAX_UPLOAD_LINES}")]
    TooManyLines(u64),
    #[error("the file is not UTF-8 text")]
    NotText,
    #[error("purpose {0:?} is not supported (only \"batch\")")]
    Purpose(String),
}

/// Check an upload's content and purpose; its text and the number of its non-blank lines.
pub fn check(purpose: &str, content: Vec<u8>) -> Result<(String, u64), UploadError> {
    if purpose != "batch" {
        return Err(UploadError::Purpose(purpose.chars().take(64).collect()));
    }
    if content.len() as u64 > MAX_UPLOAD_BYTES {
        return Err(UploadError::TooLarge);
    }
    let text = String::from_utf8(content).map_err(|_| UploadError::NotText)?;
    let lines = text.lines().filter(|l| !l.trim().is_empty()).count() as u64;
    if lines > MAX_UPLOAD_LINES {
        return Err(UploadError::TooManyLines(lines));
    }
    Ok((text, lines))
}

/// A client's file name as kept: control characters replaced, at most [`MAX_FILENAME`]
/// characters.
pub fn clean_filename(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .take(MAX_FILENAME)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_and_parse_as_openai_names_them() {
        assert_eq!(FileId(12).to_string(), "file-12");
        assert_eq!("file-12".parse::<FileId>(), Ok(FileId(12)));
        assert!("12".parse::<FileId>().is_err());
        assert!("file-x".parse::<FileId>().is_err());
    }

    #[test]
    fn batch_files_have_ids_of_their_own() {
        for r in [
            FileRef::Upload(FileId(3)),
            FileRef::Output(BatchId(7)),
            FileRef::Errors(BatchId(7)),
        ] {
            assert_eq!(r.to_string().parse::<FileRef>(), Ok(r));
        }
        assert_eq!(
            FileRef::Output(BatchId(7)).to_string(),
            "file-batch_7-output"
        );
        assert!("file-batch_x-output".parse::<FileRef>().is_err());
        assert!("file-batch_7-input".parse::<FileRef>().is_err());
    }

    #[test]
    fn uploads_are_held_to_openais_limits() {
        let (text, lines) = check("batch", b"{\"a\":1}\n\n{\"b\":2}\n".to_vec()).unwrap();
        assert_eq!((text.len(), lines), (17, 2));
        assert_eq!(
            check("fine-tune", b"x".to_vec()),
            Err(UploadError::Purpose("fine-tune".into()))
        );
        assert_eq!(check("batch", vec![0xff, 0xfe]), Err(UploadError::NotText));
        let many = "{}\n".repeat(MAX_UPLOAD_LINES as usize + 1);
        assert_eq!(
            check("batch", many.into_bytes()),
            Err(UploadError::TooManyLines(MAX_UPLOAD_LINES + 1))
        );
        assert_eq!(clean_filename("a\nb.jsonl"), "a_b.jsonl");
        assert_eq!(clean_filename(&"x".repeat(300)).len(), MAX_FILENAME);
    }
}
