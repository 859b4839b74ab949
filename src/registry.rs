//! The model registry's domain: what a registered model is, what a measured load recorded, and
//! finding GGUF files where people already keep them (`models scan`). No sled and no llama
//! here: the store keeps the records (`queue::ModelRecords`), the engine measures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::job::Millis;

/// Curves live in their own pure module; the registry keeps them with a model's records.
pub use crate::calibration::{Calibration, CurvePoint};

/// A model known by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisteredModel {
    pub name: String,
    /// The GGUF (for a split model, its first part: llama.cpp finds the others).
    pub path: String,
    /// Parts of a split GGUF, in order (empty for a single file).
    pub parts: Vec<String>,
    /// Built-in chat template to use when the GGUF has none.
    pub template: Option<String>,
    pub architecture: String,
    pub parameters: u64,
    pub quantization: String,
    /// All parts together.
    pub file_bytes: u64,
    pub added: Millis,
}

/// What llama.cpp took for one context shape, measured after a real load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryRecord {
    pub n_ctx: u32,
    pub n_seq: u32,
    /// Bytes of weights llama.cpp reports for the loaded model.
    pub weights: u64,
    /// Growth of the process's allocated (virtual) memory while the context was created: the
    /// KV cache, compute and output buffers llama.cpp allocated.
    pub context_allocated: u64,
    /// Growth of the process's resident memory over the same span (what became RAM at once:
    /// the KV cache is cleared, so resident; most of the compute buffer is not touched yet).
    pub context_resident: u64,
    pub at: Millis,
}

impl MemoryRecord {
    /// Weights plus what the context allocated: the figure a prediction is compared with.
    pub fn total(&self) -> u64 {
        self.weights + self.context_allocated
    }
}

/// The default name of a model file: its stem without a split suffix (`-00001-of-00003`).
pub fn default_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match split_part(&stem) {
        Some((base, _, _)) => base.to_string(),
        None => stem,
    }
}

/// `name-00002-of-00005` → (`name`, 2, 5).
pub fn split_part(stem: &str) -> Option<(&str, u32, u32)> {
    let (rest, total) = stem.rsplit_once("-of-")?;
    let (base, part) = rest.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(part) || !digits(total) {
        return None;
    }
    Some((base, part.parse().ok()?, total.parse().ok()?))
}

/// A model found on disk: one file, or the parts of a split GGUF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub name: String,
    /// First part (or the file).
    pub path: PathBuf,
    pub parts: Vec<PathBuf>,
    /// A split model with parts missing.
    pub incomplete: bool,
}

/// Where GGUFs usually are: LM Studio, the Hugging Face cache, llama.cpp's cache (`-hf`
/// downloads), plus the folders the config names.
pub fn usual_places(home: &Path, extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = vec![
        home.join(".lmstudio/models"),
        home.join(".cache/lm-studio/models"),
        home.join(".cache/huggingface/hub"),
        home.join(".cache/llama.cpp"),
        home.join("Library/Caches/llama.cpp"),
    ];
    if let Some(hf) = std::env::var_os("HF_HOME") {
        out.push(PathBuf::from(hf).join("hub"));
    }
    if let Some(c) = std::env::var_os("LLAMA_CACHE") {
        out.push(PathBuf::from(c));
    }
    out.extend(extra.iter().cloned());
    out
}

/// GGUF files under `roots` (following symlinks: the Hugging Face cache links snapshots to
/// blobs), split parts grouped into one model. Unreadable folders are skipped.
pub fn scan(roots: &[PathBuf]) -> Vec<Found> {
    let mut singles = Vec::new();
    let mut splits: BTreeMap<(PathBuf, String), BTreeMap<u32, (PathBuf, u32)>> = BTreeMap::new();
    for root in roots.iter().filter(|r| r.is_dir()) {
        for entry in walkdir::WalkDir::new(root)
            .follow_links(true)
            .max_depth(8)
            .into_iter()
            .filter_map(Result::ok)
        {
            let path = entry.path();
            let is_gguf = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
            if !is_gguf || !entry.file_type().is_file() {
                continue;
            }
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            // Vision projectors are not models to run.
            if stem.starts_with("mmproj") {
                continue;
            }
            match split_part(&stem) {
                Some((base, part, total)) => {
                    let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
                    splits
                        .entry((dir, base.to_string()))
                        .or_default()
                        .insert(part, (path.to_path_buf(), total));
                }
                None => singles.push(Found {
                    name: stem,
                    path: path.to_path_buf(),
                    parts: Vec::new(),
                    incomplete: false,
                }),
            }
        }
    }
    for ((_, base), parts) in splits {
        let total = parts.values().map(|(_, t)| *t).max().unwrap_or(0);
        let paths: Vec<PathBuf> = parts.values().map(|(p, _)| p.clone()).collect();
        singles.push(Found {
            name: base,
            path: paths[0].clone(),
            incomplete: parts.len() as u32 != total || !parts.contains_key(&1),
            parts: paths,
        });
    }
    singles.sort_by(|a, b| a.path.cmp(&b.path));
    singles.dedup_by(|a, b| a.path == b.path);
    singles
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_names_are_recognised() {
        assert_eq!(
            split_part("Qwen3-32B-Q4_K_M-00002-of-00005"),
            Some(("Qwen3-32B-Q4_K_M", 2, 5))
        );
        assert_eq!(split_part("Qwen3-8B-Q4_K_M"), None);
        assert_eq!(split_part("model-2-of-5"), None);
        assert_eq!(
            default_name(Path::new("/m/Qwen3-32B-Q4_K_M-00001-of-00005.gguf")),
            "Qwen3-32B-Q4_K_M"
        );
    }

    #[test]
    fn scan_groups_split_parts_and_skips_projectors() {
        let dir = tempfile::tempdir().unwrap();
        let lm = dir.path().join(".lmstudio/models/org/Repo");
        std::fs::create_dir_all(&lm).unwrap();
        for f in [
            "a-Q4.gguf",
            "mmproj-a.gguf",
            "big-00001-of-00002.gguf",
            "big-00002-of-00002.gguf",
            "cut-00001-of-00003.gguf",
            "notes.txt",
        ] {
            std::fs::write(lm.join(f), b"x").unwrap();
        }
        let found = scan(&usual_places(dir.path(), &[]));
        let names: Vec<(&str, usize, bool)> = found
            .iter()
            .map(|f| (f.name.as_str(), f.parts.len(), f.incomplete))
            .collect();
        assert_eq!(
            names,
            vec![("a-Q4", 0, false), ("big", 2, false), ("cut", 1, true)]
        );
    }
}
