//! Schema migrations, run in order when a store is opened.
//!
//! `migrations/NNNN_name.md` documents the layout of schema version NNNN. Version 1 is the
//! initial layout; each later version has a [`Step`] here that rewrites a store of the version
//! before it. A store from a newer version is refused, never guessed at.

mod v2;
mod v3;
mod v4;
mod v5;
mod v6;
mod v7;
mod v8;
mod v9;

use super::codec::SCHEMA_VERSION;
use super::trees::{meta, t};
use super::{Result, SledStore, StoreError};
use crate::queue::Queue;

/// One upgrade: rewrites every value whose layout changed from `to - 1` to `to`.
pub struct Step {
    pub to: u8,
    pub name: &'static str,
    pub run: fn(&SledStore) -> Result<()>,
}

/// Steps to versions 2, 3, …, in order.
pub const STEPS: &[Step] = &[
    Step {
        to: 2,
        name: "structured output and batch size",
        run: v2::run,
    },
    Step {
        to: 3,
        name: "model choice by memory, waits in the history, calibrations",
        run: v3::run,
    },
    Step {
        to: 4,
        name: "crash records",
        run: v4::run,
    },
    Step {
        to: 5,
        name: "conversations with their documents, dedupe keys with parameters and batch ids",
        run: v5::run,
    },
    Step {
        to: 6,
        name: "large documents in files",
        run: v6::run,
    },
    Step {
        to: 7,
        name: "totals of jobs per state",
        run: v7::run,
    },
    Step {
        to: 8,
        name: "what reproduces an answer, in its result",
        run: v8::run,
    },
    Step {
        to: 9,
        name: "batches, deadlines in the ready order, expired jobs",
        run: v9::run,
    },
];

/// Trees whose values are encoded values (a version byte, then bincode). The index trees
/// (`ready`, `delayed`, `by_state`, `custom_ids`, `dedupe`, `batch_jobs`, `open_batches`)
/// hold none.
const VERSIONED: [usize; 17] = [
    t::META,
    t::JOBS,
    t::DOCUMENTS,
    t::CHECKPOINTS,
    t::RESULTS,
    t::EVENTS,
    t::MODELS,
    t::MODEL_MEMORY,
    t::MEMORY_SAMPLES,
    t::MEMORY_MINUTES,
    t::CALIBRATIONS,
    t::CRASHES,
    t::QUARANTINE,
    t::DOCUMENT_FILES,
    t::BATCHES,
    t::BATCH_COUNTS,
    t::UPLOADS,
];

/// The schema version recorded in the store, if any. Stored as a single raw byte so that every
/// version of qwen3q can read it.
pub fn stored_version(store: &SledStore) -> Result<Option<u8>> {
    Ok(store
        .tree(t::META)
        .get(meta::SCHEMA_VERSION)?
        .and_then(|v| v.first().copied()))
}

fn write_version(store: &SledStore, version: u8) -> Result<()> {
    store
        .tree(t::META)
        .insert(meta::SCHEMA_VERSION, &[version])?;
    store.flush()
}

/// Give every value of `trees` whose version byte is one of `from` the byte `to`, its bytes
/// otherwise unchanged: the values whose layout a step kept. Idempotent, so a step cut short
/// runs again. `meta/schema_version` is a raw byte, not a value, and is left alone.
fn relabel(store: &SledStore, trees: &[usize], from: &[u8], to: u8) -> Result<()> {
    for &index in trees {
        let tree = store.tree(index);
        for kv in tree.iter() {
            let (k, v) = kv?;
            if index == t::META && &*k == meta::SCHEMA_VERSION {
                continue;
            }
            if v.first().is_some_and(|b| from.contains(b)) {
                let mut v = v.to_vec();
                v[0] = to;
                tree.insert(k, v)?;
            }
        }
    }
    Ok(())
}

/// Rewrite every value of `tree` whose version byte is one of `from` with `convert` (decode the
/// old layout, encode the new one as version `to`). Idempotent, like [`relabel`].
fn rewrite<Old: serde::de::DeserializeOwned, New: serde::Serialize>(
    store: &SledStore,
    tree: usize,
    from: &[u8],
    to: u8,
    convert: fn(Old) -> New,
) -> Result<()> {
    let tree = store.tree(tree);
    for kv in tree.iter() {
        let (k, v) = kv?;
        if let Some((version, body)) = v.split_first() {
            if from.contains(version) {
                let new = convert(super::codec::decode_body::<Old>(body)?);
                tree.insert(k, super::codec::encode_as(to, &new)?)?;
            }
        }
    }
    Ok(())
}

/// Bring the store to [`SCHEMA_VERSION`], or refuse it.
pub fn run(store: &SledStore) -> Result<()> {
    let found = match stored_version(store)? {
        Some(v) => v,
        None if store.tree(t::JOBS).is_empty() => {
            return write_version(store, SCHEMA_VERSION);
        }
        None => {
            return Err(StoreError::Corrupt {
                path: store.path.clone(),
                reason: "it holds jobs but no schema version".into(),
            })
        }
    };
    if found > SCHEMA_VERSION {
        return Err(StoreError::Newer {
            path: store.path.clone(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for step in STEPS.iter().filter(|s| s.to > found) {
        tracing::info!(to = step.to, name = step.name, "migrating the store");
        (step.run)(store)?;
        write_version(store, step.to)?;
        tracing::info!(to = step.to, "migrated the store");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::test_support::temp_store;

    #[test]
    fn every_schema_version_has_a_layout_file_and_a_step() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut versions: Vec<u8> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                let (num, rest) = name.split_once('_')?;
                assert!(
                    rest.ends_with(".md"),
                    "{name}: migrations/ holds NNNN_name.md"
                );
                Some(num.parse().unwrap())
            })
            .collect();
        versions.sort();
        let want: Vec<u8> = (1..=SCHEMA_VERSION).collect();
        assert_eq!(
            versions, want,
            "one migrations/NNNN_*.md per schema version"
        );
        let steps: Vec<u8> = STEPS.iter().map(|s| s.to).collect();
        let want_steps: Vec<u8> = (1..SCHEMA_VERSION).map(|v| v + 1).collect();
        assert_eq!(steps, want_steps, "one migration step per version after 1");
    }

    #[test]
    fn a_new_store_records_the_current_version() {
        let (_dir, store) = temp_store();
        assert_eq!(stored_version(&store).unwrap(), Some(SCHEMA_VERSION));
    }

    #[test]
    fn a_newer_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let store = SledStore::open(&path, &Default::default()).unwrap();
            write_version(&store, SCHEMA_VERSION + 1).unwrap();
        }
        let err = SledStore::open(&path, &Default::default()).unwrap_err();
        assert!(matches!(err, StoreError::Newer { .. }), "{err}");
        assert!(err.to_string().contains("newer qwen3q"));
    }
}
