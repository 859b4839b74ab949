//! Shared by the benchmark drivers: where the release binary and the test models are.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The `qwen3q` binary to measure: `QWEN3Q_BIN`, else the release build in the target dir.
pub fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("QWEN3Q_BIN") {
        return p.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let bin = target.join("release/qwen3q");
    assert!(
        bin.exists(),
        "build the binary first: cargo build --release --bins ({})",
        bin.display()
    );
    bin
}

/// A model from the cache `scripts/fetch-models.sh` fills.
pub fn model(name: &str) -> PathBuf {
    let cache = std::env::var_os("QWEN3Q_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/qwen3q/models")
        });
    cache.join(name)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}
