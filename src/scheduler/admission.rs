//! The memory budget and the admission gate: may a model load (or a batch grow) now, and what to
//! shed under critical pressure. Pure: readings and predictions in, decisions out.

use crate::monitor::{MemorySnapshot, Pressure};

/// Which share of the budget a load would overrun.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pool {
    Models,
    Buffers,
}

impl std::fmt::Display for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pool::Models => "models",
            Pool::Buffers => "processing buffers",
        })
    }
}

const GIB: u64 = 1 << 30;

/// How memory is split, in the spirit of a pool split.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// Never used by qwen3q: left to the system and the person at the machine.
    pub reserve: u64,
    /// Share of the rest (after the reserve) models may take, weights and KV caches.
    pub model_share: f64,
    /// Share of the rest processing buffers (compute buffers, documents in flight) may take.
    pub buffer_share: f64,
    /// Use of total memory, in percent, at which the worker stops growing (warning) and starts
    /// shedding load (critical).
    pub warn_percent: f64,
    pub critical_percent: f64,
}

impl Budget {
    /// Defaults from total memory: a reserve of 12.5 % of RAM (at least 4 GiB on a Mac, where
    /// the desktop must stay responsive), models 75 % and buffers 25 % of the rest, warning at
    /// 80 % and critical at 90 %.
    pub fn from_total(total: u64, mac: bool) -> Budget {
        let mut reserve = total / 8;
        if mac {
            reserve = reserve.max(4 * GIB).min(total / 2);
        }
        Budget {
            reserve,
            model_share: 0.75,
            buffer_share: 0.25,
            warn_percent: 80.0,
            critical_percent: 90.0,
        }
    }

    /// Bytes models may take on a machine with `total` memory.
    pub fn models_bytes(&self, total: u64) -> u64 {
        (total.saturating_sub(self.reserve) as f64 * self.model_share) as u64
    }

    /// Memory free beyond the reserve, by the reading `s`.
    pub fn free(&self, s: &MemorySnapshot) -> u64 {
        s.effective_available().saturating_sub(self.reserve)
    }

    /// Bytes processing buffers (a context's KV cache and compute buffers) may take.
    pub fn buffers_bytes(&self, total: u64) -> u64 {
        (total.saturating_sub(self.reserve) as f64 * self.buffer_share) as u64
    }
}

/// What a load would add, by pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// Weights not in memory yet (0 for a model already loaded).
    pub weights: u64,
    /// The context: KV cache, compute and output buffers.
    pub context: u64,
    /// Sequences the context decodes together.
    pub n_seq: u32,
}

/// Why the gate says no. The gate's refusals are the scheduler's own: the engine never
/// makes one, and the fallback ladder tells them from the engine's errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not now: `need` bytes, `free` beyond the reserve.
    #[error("waiting for memory: needs {:.1} GiB, {:.1} GiB free", *need as f64 / 1073741824.0, *free as f64 / 1073741824.0)]
    Wait { need: u64, free: u64 },
    /// The load would take `pool` past its share (`cap` bytes; `need` with what that pool
    /// holds already): fewer sequences, or unloading other models, may do.
    #[error("the {pool} share of the memory budget is {} MiB; this needs {} MiB of it", cap / 1048576, need / 1048576)]
    OverShare { pool: Pool, need: u64, cap: u64 },
}

/// The gate's answer: yes, or why not.
pub type Admit = Result<(), Refusal>;

/// May something that needs `need` more bytes start now?
pub fn admit(s: &MemorySnapshot, need: u64, budget: &Budget) -> Admit {
    let free = budget.free(s);
    if need <= free {
        Ok(())
    } else {
        Err(Refusal::Wait { need, free })
    }
}

/// The whole gate: `need` must fit in the memory free beyond the reserve, the weights of the
/// models loaded (`loaded_weights`, other models) plus the new ones within the models' share,
/// and the context within the buffers' share — except a context of one sequence, which is
/// never refused for its share (a model must be able to run at all; the free-memory check
/// still applies).
pub fn admit_shares(s: &MemorySnapshot, need: Need, loaded_weights: u64, budget: &Budget) -> Admit {
    let total = s.effective_total();
    let models_cap = budget.models_bytes(total);
    if need.weights > 0 && loaded_weights + need.weights > models_cap {
        return Err(Refusal::OverShare {
            pool: Pool::Models,
            need: loaded_weights + need.weights,
            cap: models_cap,
        });
    }
    let buffers_cap = budget.buffers_bytes(total);
    if need.n_seq > 1 && need.context > buffers_cap {
        return Err(Refusal::OverShare {
            pool: Pool::Buffers,
            need: need.context,
            cap: buffers_cap,
        });
    }
    admit(s, need.weights + need.context, budget)
}

/// The pressure now: the OS's own level where it reports one, else (and at least) what the
/// share in use says against the thresholds.
pub fn pressure(s: &MemorySnapshot, budget: &Budget) -> Pressure {
    let used = s.used_percent();
    let derived = if used >= budget.critical_percent {
        Pressure::Critical
    } else if used >= budget.warn_percent {
        Pressure::Warn
    } else {
        Pressure::Normal
    };
    derived.max(s.os_pressure.unwrap_or(Pressure::Normal))
}

/// One step of shedding load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shed {
    ShrinkBatch,
    UnloadIdle,
    PauseClaiming,
}

/// What the worker could still shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sheddable {
    /// Sequences decoded together now.
    pub batch: u32,
    /// Loaded models that are not in use.
    pub idle_models: usize,
    /// Whether the worker still claims new jobs.
    pub claiming: bool,
}

/// Under critical pressure, the next thing to shed, in order: shrink the batch, unload idle
/// models, pause claiming. Nothing under lesser pressure, or when nothing is left.
pub fn shed(pressure: Pressure, can: Sheddable) -> Option<Shed> {
    if pressure != Pressure::Critical {
        return None;
    }
    if can.batch > 1 {
        Some(Shed::ShrinkBatch)
    } else if can.idle_models > 0 {
        Some(Shed::UnloadIdle)
    } else if can.claiming {
        Some(Shed::PauseClaiming)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::monitor::plain_snapshot as snap;

    #[test]
    fn defaults_follow_total_memory() {
        let linux = Budget::from_total(24 * GIB, false);
        assert_eq!(linux.reserve, 3 * GIB);
        let mac = Budget::from_total(16 * GIB, true);
        assert_eq!(mac.reserve, 4 * GIB, "at least 4 GiB on a Mac");
        assert_eq!(Budget::from_total(64 * GIB, true).reserve, 8 * GIB);
        assert_eq!(mac.models_bytes(16 * GIB), 9 * GIB);
        assert_eq!((mac.warn_percent, mac.critical_percent), (80.0, 90.0));
    }

    #[test]
    fn the_gate_keeps_the_reserve_free() {
        let b = Budget::from_total(16 * GIB, false); // reserve 2 GiB
        let s = snap(16 * GIB, 7 * GIB);
        assert_eq!(admit(&s, 5 * GIB, &b), Ok(()));
        assert_eq!(
            admit(&s, 5 * GIB + 1, &b),
            Err(Refusal::Wait {
                need: 5 * GIB + 1,
                free: 5 * GIB
            })
        );
    }

    #[test]
    fn the_shares_bound_weights_and_batches_but_never_one_sequence_alone() {
        // 16 GiB, reserve 2: models may take 10.5 GiB, buffers 3.5 GiB; 12 GiB available.
        let b = Budget::from_total(16 * GIB, false);
        let s = snap(16 * GIB, 12 * GIB);
        let need = |weights: u64, context: u64, n_seq: u32| Need {
            weights,
            context,
            n_seq,
        };
        assert_eq!(admit_shares(&s, need(6 * GIB, 3 * GIB, 4), 0, &b), Ok(()));
        // Another model's 5 GiB already loaded: 11 GiB of weights is past the models' share.
        assert_eq!(
            admit_shares(&s, need(6 * GIB, GIB, 1), 5 * GIB, &b),
            Err(Refusal::OverShare {
                pool: Pool::Models,
                need: 11 * GIB,
                cap: 10 * GIB + GIB / 2
            })
        );
        // A loaded model (no new weights) is not held by the others' weights.
        assert_eq!(admit_shares(&s, need(0, GIB, 1), 9 * GIB, &b), Ok(()));
        // 4 GiB of context for 8 sequences is past the buffers' share; for one it is not.
        assert_eq!(
            admit_shares(&s, need(GIB, 4 * GIB, 8), 0, &b),
            Err(Refusal::OverShare {
                pool: Pool::Buffers,
                need: 4 * GIB,
                cap: 3 * GIB + GIB / 2
            })
        );
        assert_eq!(admit_shares(&s, need(GIB, 4 * GIB, 1), 0, &b), Ok(()));
        // Within both shares, the free memory still decides.
        assert_eq!(admit_shares(&s, need(7 * GIB, 3 * GIB, 2), 0, &b), Ok(()));
        assert!(matches!(
            admit_shares(&s, need(8 * GIB, 3 * GIB, 2), 0, &b),
            Err(Refusal::Wait { .. })
        ));
    }

    #[test]
    fn pressure_takes_the_worse_of_the_os_and_the_thresholds() {
        let b = Budget::from_total(10 * GIB, false);
        assert_eq!(pressure(&snap(10 * GIB, 5 * GIB), &b), Pressure::Normal);
        assert_eq!(pressure(&snap(10 * GIB, 2 * GIB), &b), Pressure::Warn);
        assert_eq!(pressure(&snap(10 * GIB, GIB / 2), &b), Pressure::Critical);
        let mut s = snap(10 * GIB, 5 * GIB);
        s.os_pressure = Some(Pressure::Critical);
        assert_eq!(pressure(&s, &b), Pressure::Critical);
    }

    #[test]
    fn shedding_goes_batch_then_idle_models_then_claiming() {
        let c = Pressure::Critical;
        let all = Sheddable {
            batch: 4,
            idle_models: 1,
            claiming: true,
        };
        assert_eq!(shed(Pressure::Warn, all), None);
        assert_eq!(shed(c, all), Some(Shed::ShrinkBatch));
        let b1 = Sheddable { batch: 1, ..all };
        assert_eq!(shed(c, b1), Some(Shed::UnloadIdle));
        let none_idle = Sheddable {
            idle_models: 0,
            ..b1
        };
        assert_eq!(shed(c, none_idle), Some(Shed::PauseClaiming));
        let paused = Sheddable {
            claiming: false,
            ..none_idle
        };
        assert_eq!(shed(c, paused), None);
    }
}
