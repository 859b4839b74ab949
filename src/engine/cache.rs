//! The loaded models of an engine, kept by the pure [`Lru`]: a byte budget and a count limit,
//! least recently used idle model evicted first, never the one in use, keep-alive, pins, and
//! freeing bytes on demand. Both engines keep their models here (`M` is the engine's model
//! type), so the fake engine exercises the same decisions in unit tests.
//!
//! One model is *current* at a time (the batch's model, with its context): it is the one in
//! use, counted with its context's bytes. Switching to another model releases it, and it
//! counts its weights only from then on.

use std::collections::HashMap;

use super::lru::{Acquire, Limits, Lru};
use super::EngineError;
use crate::job::{Millis, ModelRef};

/// A loaded model, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LoadedModel {
    pub name: String,
    pub path: String,
    pub bytes: u64,
    pub last_used: Millis,
    /// The batch's model (it has the context and the sequences in flight).
    pub current: bool,
    pub pinned: bool,
}

struct Held<M> {
    model_ref: ModelRef,
    model: M,
    /// Bytes of the weights alone (what an idle model takes).
    weights: u64,
}

/// See the module docs.
pub struct ModelCache<M> {
    lru: Lru<String>,
    held: HashMap<String, Held<M>>,
    current: Option<String>,
}

impl<M> ModelCache<M> {
    pub fn new(limits: Limits, pins: &[String]) -> Self {
        let mut lru = Lru::new(limits);
        for p in pins {
            lru.pin(p.clone());
        }
        ModelCache {
            lru,
            held: HashMap::new(),
            current: None,
        }
    }

    /// Make `model_ref` current, loading it with `load` if it is not loaded (after evicting
    /// what the LRU names). `predicted` is what it will take with its context. `load` returns
    /// the model and the bytes of its weights.
    pub fn make_current(
        &mut self,
        model_ref: &ModelRef,
        predicted: u64,
        now: Millis,
        load: impl FnOnce() -> Result<(M, u64), EngineError>,
    ) -> Result<(), EngineError> {
        let key = &model_ref.path;
        if self.current.as_ref() == Some(key) {
            return Ok(());
        }
        self.release_current(now);
        match self.lru.acquire(key, predicted, now) {
            Acquire::Ready => {}
            Acquire::Wait => unreachable!("one thread loads: no load is ever in progress here"),
            Acquire::NoRoom { needed, available } => {
                return Err(EngineError::NoRoom { needed, available })
            }
            Acquire::Load { evict } => {
                for victim in evict {
                    if let Some(h) = self.held.remove(&victim) {
                        tracing::info!(model = %h.model_ref.name, "unloading to make room");
                    }
                }
                match load() {
                    Ok((model, weights)) => {
                        self.lru.loaded(key, predicted, now);
                        self.held.insert(
                            key.clone(),
                            Held {
                                model_ref: model_ref.clone(),
                                model,
                                weights,
                            },
                        );
                    }
                    Err(e) => {
                        self.lru.load_failed(key);
                        return Err(e);
                    }
                }
            }
        }
        self.current = Some(key.clone());
        Ok(())
    }

    /// The current model stops being in use: it counts its weights only and may be evicted.
    pub fn release_current(&mut self, now: Millis) {
        if let Some(key) = self.current.take() {
            if let Some(h) = self.held.get(&key) {
                self.lru.resize(&key, h.weights);
            }
            self.lru.release(&key, now);
        }
    }

    /// The current model now takes `bytes` (its context was made).
    pub fn resize_current(&mut self, bytes: u64) {
        if let Some(key) = &self.current {
            self.lru.resize(key, bytes);
        }
    }

    pub fn current(&self) -> Option<(&ModelRef, &M)> {
        let h = self.held.get(self.current.as_ref()?)?;
        Some((&h.model_ref, &h.model))
    }

    pub fn current_mut(&mut self) -> Option<&mut M> {
        let key = self.current.as_ref()?;
        self.held.get_mut(key).map(|h| &mut h.model)
    }

    /// Unload idle models past their keep-alive; their names.
    pub fn expire(&mut self, now: Millis) -> Vec<String> {
        let expired = self.lru.expired(now);
        self.drop_all(expired)
    }

    /// Unload idle models (least recently used first, pinned last) until `bytes` are freed;
    /// the bytes freed.
    pub fn free(&mut self, bytes: u64) -> u64 {
        let before = self.lru.used_bytes();
        let victims = self.lru.free(bytes);
        self.drop_all(victims);
        before - self.lru.used_bytes()
    }

    /// Unload everything (the current model too).
    pub fn clear(&mut self, now: Millis) {
        self.release_current(now);
        let keys: Vec<String> = self.held.keys().cloned().collect();
        for k in &keys {
            self.lru.forget(k);
        }
        self.held.clear();
    }

    fn drop_all(&mut self, keys: Vec<String>) -> Vec<String> {
        keys.into_iter()
            .filter_map(|k| self.held.remove(&k))
            .map(|h| {
                tracing::info!(model = %h.model_ref.name, "unloaded");
                h.model_ref.name
            })
            .collect()
    }

    pub fn loaded(&self) -> Vec<LoadedModel> {
        self.lru
            .entries()
            .into_iter()
            .filter_map(|e| {
                let h = self.held.get(&e.key)?;
                Some(LoadedModel {
                    name: h.model_ref.name.clone(),
                    path: e.key.clone(),
                    bytes: e.bytes,
                    last_used: e.last_used,
                    current: self.current.as_ref() == Some(&e.key),
                    pinned: e.pinned,
                })
            })
            .collect()
    }
}
