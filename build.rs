//! `QWEN3Q_BUILD`: a hash of the sources, the manifest and the lock file, so that `qwen3q`
//! can tell a `qwen3q-engine` of another build from its own (see `src/cli/inference.rs`).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn main() {
    let mut paths = Vec::new();
    files(Path::new("src"), &mut paths);
    paths.extend(["Cargo.toml", "Cargo.lock", "build.rs"].map(PathBuf::from));
    paths.sort();
    // SipHash with fixed keys: the same sources give the same value on every build.
    let mut hasher = std::hash::DefaultHasher::new();
    for path in &paths {
        path.hash(&mut hasher);
        std::fs::read(path).unwrap_or_default().hash(&mut hasher);
    }
    println!("cargo:rustc-env=QWEN3Q_BUILD={:016x}", hasher.finish());
    for watched in ["src", "Cargo.toml", "Cargo.lock", "build.rs"] {
        println!("cargo:rerun-if-changed={watched}");
    }
}
