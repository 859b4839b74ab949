//! Models already checked: a GGUF whose header was read and found usable is remembered by its
//! path, size and modification time in `<home>/validated-models.json`, so the next command
//! that names it does not read its header again (tens of milliseconds for a 262k-token
//! vocabulary: most of a single `enqueue`). A file that changed (another size or time) is read
//! again. The cache is a convenience: a missing, unreadable, oversized or damaged file is an
//! empty cache, and failing to write it changes nothing but speed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::engine::gguf::{self, GgufError};

/// What the check of a model found that resolving it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelCheck {
    /// `general.architecture`, if the header names one.
    pub architecture: Option<String>,
    /// The header carries a chat template.
    pub has_template: bool,
}

/// One remembered model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    /// The file's size and modification time (nanoseconds since the epoch) when checked.
    size: u64,
    mtime_ns: u64,
    check: ModelCheck,
}

/// At most this many models are remembered; past it, entries go in path order (a cache: a
/// model dropped is only read again).
const MAX_ENTRIES: usize = 64;
/// A cache file larger than this is not read.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// The cache of checked models of one home.
#[derive(Debug, Clone)]
pub struct ValidatedModels {
    /// `<home>/validated-models.json`.
    file: PathBuf,
}

/// The file's size and modification time, as the cache keys them.
fn stamp(path: &Path) -> std::io::Result<(u64, u64)> {
    let meta = std::fs::metadata(path)?;
    let mtime = meta
        .modified()?
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64);
    Ok((meta.len(), mtime))
}

impl ValidatedModels {
    pub fn new(file: PathBuf) -> Self {
        ValidatedModels { file }
    }

    /// Check the GGUF at `path` (canonical): from the cache when the file is unchanged since
    /// it was checked, else by reading its header (and remembering a usable one).
    pub fn check(&self, path: &Path) -> Result<ModelCheck, GgufError> {
        let key = path.to_string_lossy().into_owned();
        let (size, mtime_ns) = stamp(path)?;
        let mut entries = self.read();
        if let Some(e) = entries.get(&key) {
            if e.size == size && e.mtime_ns == mtime_ns {
                return Ok(e.check.clone());
            }
        }
        let header = gguf::inspect(path)?;
        let check = ModelCheck {
            architecture: header.architecture().map(str::to_string),
            has_template: header.chat_template().is_some(),
        };
        entries.insert(
            key,
            Entry {
                size,
                mtime_ns,
                check: check.clone(),
            },
        );
        while entries.len() > MAX_ENTRIES {
            entries.pop_first();
        }
        self.write(&entries);
        Ok(check)
    }

    fn read(&self) -> BTreeMap<String, Entry> {
        crate::home::read_small_json(&self.file, MAX_FILE_BYTES).unwrap_or_default()
    }

    /// Replace the file whole (a temporary file renamed over it): a reader sees the old cache
    /// or the new one. Best effort.
    fn write(&self, entries: &BTreeMap<String, Entry>) {
        let _ = crate::home::replace_json(&self.file, entries);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::engine::gguf::test_model as gguf;

    #[test]
    fn an_unchanged_model_is_not_read_again_and_a_changed_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.gguf");
        std::fs::write(&model, gguf("qwen3")).unwrap();
        let cache = ValidatedModels::new(dir.path().join("validated-models.json"));
        let first = cache.check(&model).unwrap();
        assert_eq!(first.architecture.as_deref(), Some("qwen3"));
        assert!(!first.has_template);
        // Same size and time, other bytes (a damaged header): the cache answers, so the
        // header was not read again.
        let when = std::fs::metadata(&model).unwrap().modified().unwrap();
        let mut same_size = gguf("qwen3");
        same_size[0] = b'X';
        std::fs::write(&model, &same_size).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&model)
            .unwrap()
            .set_modified(when)
            .unwrap();
        assert_eq!(cache.check(&model).unwrap(), first);
        // Touched (another time): read again, and found damaged.
        std::fs::File::options()
            .write(true)
            .open(&model)
            .unwrap()
            .set_modified(when + std::time::Duration::from_secs(1))
            .unwrap();
        assert!(cache.check(&model).is_err());
        // Rewritten with another architecture (another size): read again.
        std::fs::write(&model, gguf("gemma3-longer")).unwrap();
        assert_eq!(
            cache.check(&model).unwrap().architecture.as_deref(),
            Some("gemma3-longer")
        );
        // Damaged now: the check fails, whatever was remembered.
        std::fs::write(&model, b"GGUF broken").unwrap();
        assert!(cache.check(&model).is_err());
        // A damaged cache file is an empty cache.
        std::fs::write(dir.path().join("validated-models.json"), b"{not json").unwrap();
        std::fs::write(&model, gguf("qwen3")).unwrap();
        assert_eq!(cache.check(&model).unwrap(), first);
    }
}
