//! Jobs waiting for memory: deferred when the gate refuses them (no attempt counted, `status`
//! and the memory history say why), and woken early when a batch ends or memory frees.

use super::admission::Refusal;
use super::batch::Batch;
use super::ladder::LoadError;
use super::ladder::MEMORY_WAIT;
use super::Exit;
use super::{MemoryWait, Worker};
use crate::job::{JobId, Millis};
use crate::queue::StoreError;

impl Worker {
    /// `--drain` with jobs waiting for memory and none of them fitting the memory free now:
    /// once (again after progress), unload every model and let them all try again; after that,
    /// end the drain saying they cannot fit. `None` when there is nothing to decide.
    pub(super) fn drain_memory_waiters(
        &mut self,
        b: &mut Batch,
    ) -> Result<Option<Option<Exit>>, StoreError> {
        if b.waits.jobs.is_empty() {
            return Ok(None);
        }
        let finished = self.status.lock().unwrap().finished;
        if b.waits.last_try != Some(finished) {
            b.waits.last_try = Some(finished);
            self.engine.unload((self.now)());
            tracing::info!(
                jobs = b.waits.jobs.len(),
                "drain: jobs wait for memory; unloaded every model for them to try once more"
            );
            self.wake_memory_waiters(b, Wake::Everyone)?;
            return Ok(Some(None));
        }
        let free = self.budget.free(&self.probe.sample((self.now)()));
        let need = b
            .waits
            .jobs
            .iter()
            .map(|&(_, n)| n)
            .filter(|&n| n != u64::MAX)
            .max();
        // Jobs deferred for memory count among the delayed ones: the others are the rest.
        let delayed = self
            .store
            .delayed_count()?
            .saturating_sub(b.waits.jobs.len());
        Ok(Some(Some(Exit::NoMemory {
            jobs: b.waits.jobs.iter().map(|&(id, _)| id).collect(),
            need,
            free,
            delayed,
        })))
    }

    /// The job cannot load `model` now for lack of memory: back to the queue for a while (no
    /// attempt counted), and `status` and the memory history say so.
    pub(super) fn wait_for_memory(
        &mut self,
        b: &mut Batch,
        id: JobId,
        model: &str,
        now: Millis,
        e: &LoadError,
    ) -> Result<(), StoreError> {
        let until = now + MEMORY_WAIT.as_millis() as u64;
        let need = match e {
            LoadError::Gate(Refusal::Wait { need, .. }) => *need,
            _ => u64::MAX,
        };
        b.waits.jobs.retain(|w| w.0 != id);
        b.waits.jobs.push((id, need));
        let why = match e {
            LoadError::Gate(Refusal::Wait { .. }) => e.to_string(),
            _ => format!("waiting for memory ({e})"),
        };
        tracing::warn!(job = %id, "{why}");
        self.status.lock().unwrap().memory_wait = Some(MemoryWait {
            at: now,
            model: model.to_string(),
            why: why.clone(),
        });
        self.store.defer(
            id,
            now,
            until,
            &format!("{why}; tries again when memory frees, at the latest in a minute"),
        )
    }

    /// Jobs waiting for memory may be tried now, as `wake` says which.
    pub(super) fn wake_memory_waiters(
        &mut self,
        b: &mut Batch,
        wake: Wake,
    ) -> Result<(), StoreError> {
        let now = (self.now)();
        let (woken, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut b.waits.jobs)
            .into_iter()
            .partition(|&(_, need)| match wake {
                Wake::Everyone => true,
                // A wait of unknown need (a decode that failed even alone) is retried on time.
                Wake::BatchEnded => need != u64::MAX,
                Wake::Fitting(free) => need != u64::MAX && need <= free,
            });
        b.waits.jobs = keep;
        let why = match wake {
            Wake::Everyone => "drain: every model unloaded; trying again for memory".to_string(),
            Wake::BatchEnded => "a batch ended: trying again for memory".to_string(),
            Wake::Fitting(f) => format!(
                "memory freed ({:.1} GiB free): trying again",
                f as f64 / (1u64 << 30) as f64
            ),
        };
        for (id, _) in woken {
            if self.store.wake(id, now, &why)? {
                tracing::info!(job = %id, "{why}");
            }
        }
        Ok(())
    }
}

/// Which jobs waiting for memory go again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wake {
    /// All of them (`--drain`'s last try, with nothing loaded).
    Everyone,
    /// Those of known need: a batch ended, its context is gone, and the ladder may unload its
    /// idle model.
    BatchEnded,
    /// Those that needed no more than this many bytes, now free.
    Fitting(u64),
}
