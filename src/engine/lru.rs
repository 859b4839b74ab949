//! Which models stay loaded: a byte-budgeted, count-limited LRU with single-flight loads,
//! keep-alive and pinning. Pure: it decides, the engine executes (loads, unloads) and reports
//! back. Time comes in as milliseconds; nothing here touches llama.cpp.
//!
//! The protocol, per model key `K`:
//! - [`Lru::acquire`] before using a model: `Ready` (use it now), `Load` (load it, after
//!   unloading the listed victims, then call [`Lru::loaded`] or [`Lru::load_failed`]),
//!   `Wait` (another caller is loading it: single-flight), or `NoRoom` (even evicting every
//!   idle unpinned model would not make room).
//! - [`Lru::release`] when done with it; a model with work in flight is never evicted.
//! - [`Lru::expired`] on a timer: idle models past their keep-alive, to unload.
//! - [`Lru::free`] when the memory gate needs bytes back.

use std::collections::HashMap;
use std::hash::Hash;

/// Bounds and timing.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Bytes all loaded models may take together.
    pub budget_bytes: u64,
    /// Most models loaded at once.
    pub max_models: usize,
    /// An idle model unloads after this long (ms).
    pub keep_alive_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
enum Slot {
    /// Being loaded; `bytes` is the prediction, reserved meanwhile.
    Loading { bytes: u64 },
    Loaded {
        bytes: u64,
        /// Callers using it now.
        in_flight: u32,
        last_used: u64,
    },
}

impl Slot {
    fn bytes(&self) -> u64 {
        match self {
            Slot::Loading { bytes } | Slot::Loaded { bytes, .. } => *bytes,
        }
    }
}

/// What [`Lru::acquire`] asks of the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire<K> {
    /// Loaded: use it (and `release` it afterwards).
    Ready,
    /// Unload `evict` (in order), then load the model and report with `loaded`/`load_failed`.
    Load { evict: Vec<K> },
    /// Someone else is loading it: wait for their `loaded`, then acquire again.
    Wait,
    /// It cannot fit: `needed` bytes, at most `available` could be made free now.
    NoRoom { needed: u64, available: u64 },
}

/// One loaded (or loading) model, for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<K> {
    pub key: K,
    pub bytes: u64,
    pub loading: bool,
    pub in_flight: u32,
    pub last_used: u64,
    pub pinned: bool,
}

/// The LRU's state. See the module docs.
#[derive(Debug, Clone)]
pub struct Lru<K: Eq + Hash + Clone> {
    limits: Limits,
    slots: HashMap<K, Slot>,
    pinned: Vec<K>,
}

impl<K: Eq + Hash + Clone + Ord> Lru<K> {
    pub fn new(limits: Limits) -> Self {
        Lru {
            limits,
            slots: HashMap::new(),
            pinned: Vec::new(),
        }
    }

    /// Keep this model loaded whatever its idle time (config `pin`).
    pub fn pin(&mut self, key: K) {
        if !self.pinned.contains(&key) {
            self.pinned.push(key);
        }
    }

    fn is_pinned(&self, key: &K) -> bool {
        self.pinned.contains(key)
    }

    pub fn used_bytes(&self) -> u64 {
        self.slots.values().map(Slot::bytes).sum()
    }

    /// Idle loaded models (no work in flight), pinned or not as asked, least recently used
    /// first.
    fn idle(&self, pinned: bool) -> Vec<(K, u64)> {
        let mut idle: Vec<(K, u64, u64)> = self
            .slots
            .iter()
            .filter_map(|(k, s)| match s {
                Slot::Loaded {
                    bytes,
                    in_flight: 0,
                    last_used,
                } if self.is_pinned(k) == pinned => Some((k.clone(), *bytes, *last_used)),
                _ => None,
            })
            .collect();
        idle.sort_by(|a, b| a.2.cmp(&b.2).then(a.0.cmp(&b.0)));
        idle.into_iter().map(|(k, b, _)| (k, b)).collect()
    }

    /// The eviction order: idle, unpinned models, least recently used first.
    fn victims(&self) -> Vec<(K, u64)> {
        self.idle(false)
    }

    /// Ask to use `key`, whose load is predicted to take `bytes`.
    pub fn acquire(&mut self, key: &K, bytes: u64, now: u64) -> Acquire<K> {
        match self.slots.get_mut(key) {
            Some(Slot::Loaded {
                in_flight,
                last_used,
                ..
            }) => {
                *in_flight += 1;
                *last_used = now;
                return Acquire::Ready;
            }
            Some(Slot::Loading { .. }) => return Acquire::Wait,
            None => {}
        }
        let mut used = self.used_bytes();
        let mut count = self.slots.len();
        let mut evict = Vec::new();
        let victims = self.victims();
        let freeable: u64 = victims.iter().map(|v| v.1).sum();
        for (victim, vbytes) in victims {
            if used + bytes <= self.limits.budget_bytes && count < self.limits.max_models {
                break;
            }
            used -= vbytes;
            count -= 1;
            evict.push(victim);
        }
        if used + bytes > self.limits.budget_bytes || count >= self.limits.max_models {
            return Acquire::NoRoom {
                needed: bytes,
                available: self.limits.budget_bytes.saturating_sub(self.used_bytes()) + freeable,
            };
        }
        for v in &evict {
            self.slots.remove(v);
        }
        self.slots.insert(key.clone(), Slot::Loading { bytes });
        Acquire::Load { evict }
    }

    /// The load finished; `bytes` is what it really took. The loader holds it (in flight 1).
    pub fn loaded(&mut self, key: &K, bytes: u64, now: u64) {
        self.slots.insert(
            key.clone(),
            Slot::Loaded {
                bytes,
                in_flight: 1,
                last_used: now,
            },
        );
    }

    /// The load failed: its reservation is given back.
    pub fn load_failed(&mut self, key: &K) {
        if matches!(self.slots.get(key), Some(Slot::Loading { .. })) {
            self.slots.remove(key);
        }
    }

    /// What a loaded model takes changed (its context was created or dropped).
    pub fn resize(&mut self, key: &K, new_bytes: u64) {
        if let Some(Slot::Loaded { bytes, .. }) = self.slots.get_mut(key) {
            *bytes = new_bytes;
        }
    }

    /// Forget `key` (it was unloaded from outside the LRU's own decisions).
    pub fn forget(&mut self, key: &K) {
        self.slots.remove(key);
    }

    /// Done using `key`.
    pub fn release(&mut self, key: &K, now: u64) {
        if let Some(Slot::Loaded {
            in_flight,
            last_used,
            ..
        }) = self.slots.get_mut(key)
        {
            *in_flight = in_flight.saturating_sub(1);
            *last_used = now;
        }
    }

    /// Idle, unpinned models unused for longer than the keep-alive: unload them. They are
    /// forgotten here at once.
    pub fn expired(&mut self, now: u64) -> Vec<K> {
        let keep = self.limits.keep_alive_ms;
        let mut out: Vec<K> = self
            .slots
            .iter()
            .filter(|(k, s)| {
                matches!(s, Slot::Loaded { in_flight: 0, last_used, .. } if now.saturating_sub(*last_used) >= keep)
                    && !self.is_pinned(k)
            })
            .map(|(k, _)| k.clone())
            .collect();
        out.sort();
        for k in &out {
            self.slots.remove(k);
        }
        out
    }

    /// Free at least `bytes` by evicting idle models, least recently used first (pinned ones
    /// too, last, since memory pressure outranks a pin). Returns the models to unload; fewer
    /// bytes than asked when models with work in flight hold the rest.
    pub fn free(&mut self, bytes: u64) -> Vec<K> {
        let mut order = self.victims();
        order.extend(self.idle(true));
        let mut freed = 0;
        let mut out = Vec::new();
        for (k, b) in order {
            if freed >= bytes {
                break;
            }
            freed += b;
            self.slots.remove(&k);
            out.push(k);
        }
        out
    }

    /// Every loaded or loading model, most recently used first.
    pub fn entries(&self) -> Vec<Entry<K>> {
        let mut out: Vec<Entry<K>> = self
            .slots
            .iter()
            .map(|(k, s)| match s {
                Slot::Loading { bytes } => Entry {
                    key: k.clone(),
                    bytes: *bytes,
                    loading: true,
                    in_flight: 0,
                    last_used: u64::MAX,
                    pinned: self.is_pinned(k),
                },
                Slot::Loaded {
                    bytes,
                    in_flight,
                    last_used,
                } => Entry {
                    key: k.clone(),
                    bytes: *bytes,
                    loading: false,
                    in_flight: *in_flight,
                    last_used: *last_used,
                    pinned: self.is_pinned(k),
                },
            })
            .collect();
        out.sort_by(|a, b| b.last_used.cmp(&a.last_used).then(a.key.cmp(&b.key)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: u64 = 1 << 30;

    fn lru(budget_gb: u64, max_models: usize) -> Lru<&'static str> {
        Lru::new(Limits {
            budget_bytes: budget_gb * GB,
            max_models,
            keep_alive_ms: 300_000,
        })
    }

    /// Acquire and finish loading, as the engine would.
    fn load(l: &mut Lru<&'static str>, k: &'static str, gb: u64, now: u64) -> Vec<&'static str> {
        match l.acquire(&k, gb * GB, now) {
            Acquire::Load { evict } => {
                l.loaded(&k, gb * GB, now);
                evict
            }
            other => panic!("{k}: {other:?}"),
        }
    }

    #[test]
    fn a_loaded_model_is_reused() {
        let mut l = lru(10, 4);
        assert!(load(&mut l, "a", 4, 0).is_empty());
        l.release(&"a", 1);
        assert_eq!(l.acquire(&"a", 4 * GB, 2), Acquire::Ready);
        assert_eq!(l.used_bytes(), 4 * GB);
    }

    #[test]
    fn the_least_recently_used_idle_model_goes_first() {
        let mut l = lru(10, 4);
        load(&mut l, "a", 4, 0);
        l.release(&"a", 10);
        load(&mut l, "b", 4, 20);
        l.release(&"b", 30);
        // Touch a: b is now the least recently used.
        assert_eq!(l.acquire(&"a", 4 * GB, 40), Acquire::Ready);
        l.release(&"a", 50);
        assert_eq!(load(&mut l, "c", 4, 60), vec!["b"]);
        let keys: Vec<_> = l.entries().into_iter().map(|e| e.key).collect();
        assert_eq!(keys, vec!["c", "a"]);
    }

    #[test]
    fn a_model_with_work_in_flight_is_never_evicted() {
        let mut l = lru(10, 4);
        load(&mut l, "a", 6, 0); // in flight
        assert_eq!(
            l.acquire(&"b", 6 * GB, 1),
            Acquire::NoRoom {
                needed: 6 * GB,
                available: 4 * GB
            }
        );
        l.release(&"a", 2);
        assert_eq!(load(&mut l, "b", 6, 3), vec!["a"]);
    }

    #[test]
    fn loads_are_single_flight() {
        let mut l = lru(10, 4);
        assert_eq!(l.acquire(&"a", 4 * GB, 0), Acquire::Load { evict: vec![] });
        assert_eq!(l.acquire(&"a", 4 * GB, 0), Acquire::Wait);
        assert_eq!(l.used_bytes(), 4 * GB, "the load's bytes are reserved");
        l.loaded(&"a", 3 * GB, 5);
        assert_eq!(l.acquire(&"a", 4 * GB, 6), Acquire::Ready);
        assert_eq!(l.entries()[0].in_flight, 2);
        assert_eq!(
            l.used_bytes(),
            3 * GB,
            "measured bytes replace the prediction"
        );
    }

    #[test]
    fn a_failed_load_gives_its_reservation_back() {
        let mut l = lru(10, 4);
        assert!(matches!(l.acquire(&"a", 8 * GB, 0), Acquire::Load { .. }));
        l.load_failed(&"a");
        assert_eq!(l.used_bytes(), 0);
        assert!(matches!(l.acquire(&"b", 8 * GB, 1), Acquire::Load { .. }));
    }

    #[test]
    fn the_count_limit_evicts_too() {
        let mut l = lru(100, 2);
        load(&mut l, "a", 1, 0);
        l.release(&"a", 1);
        load(&mut l, "b", 1, 2);
        l.release(&"b", 3);
        assert_eq!(load(&mut l, "c", 1, 4), vec!["a"]);
    }

    #[test]
    fn idle_models_expire_after_keep_alive_unless_pinned() {
        let mut l = lru(100, 4);
        l.pin("p");
        for (k, t) in [("a", 0), ("b", 100_000), ("p", 0)] {
            load(&mut l, k, 1, t);
            l.release(&k, t);
        }
        assert!(l.expired(299_999).is_empty());
        assert_eq!(l.expired(300_000), vec!["a"]);
        assert_eq!(l.expired(400_000), vec!["b"]);
        assert!(l.expired(10_000_000).is_empty(), "pinned stays");
        // In flight never expires.
        load(&mut l, "c", 1, 0);
        assert!(l.expired(10_000_000).is_empty());
    }

    #[test]
    fn free_evicts_idle_lru_first_and_pinned_last() {
        let mut l = lru(100, 8);
        l.pin("p");
        for (k, t) in [("p", 0), ("a", 10), ("b", 20), ("busy", 30)] {
            load(&mut l, k, 2, t);
            if k != "busy" {
                l.release(&k, t);
            }
        }
        assert_eq!(l.free(3 * GB), vec!["a", "b"]);
        assert_eq!(l.free(GB), vec!["p"]);
        assert!(l.free(GB).is_empty(), "a busy model is not freed");
        assert_eq!(l.used_bytes(), 2 * GB);
    }

    #[test]
    fn a_model_bigger_than_the_budget_has_no_room() {
        let mut l = lru(4, 4);
        assert_eq!(
            l.acquire(&"huge", 5 * GB, 0),
            Acquire::NoRoom {
                needed: 5 * GB,
                available: 4 * GB
            }
        );
        assert_eq!(l.used_bytes(), 0);
    }
}
