//! Jobs waiting for memory: deferred when the gate refuses them (no attempt counted, `status`
//! and the memory history say why), and woken early when a batch ends or memory frees.

use super::batch::Batch;
use super::ladder::MEMORY_WAIT;
use super::{MemoryWait, Worker};
use crate::engine::EngineError;
use crate::job::{JobId, Millis};
use crate::queue::StoreError;

impl Worker {
    /// The job cannot load `model` now for lack of memory: back to the queue for a while (no
    /// attempt counted), and `status` and the memory history say so.
    pub(super) fn wait_for_memory(
        &mut self,
        b: &mut Batch,
        id: JobId,
        model: &str,
        now: Millis,
        e: &EngineError,
    ) -> Result<(), StoreError> {
        let until = now + MEMORY_WAIT.as_millis() as u64;
        let need = match e {
            EngineError::NoMemory { need, .. } => *need,
            _ => u64::MAX,
        };
        b.memory_waiters.retain(|w| w.0 != id);
        b.memory_waiters.push((id, need));
        let why = match e {
            EngineError::NoMemory { .. } => e.to_string(),
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

    /// Jobs waiting for memory may be tried now: all of them when `free` is `None` (a batch
    /// ended: its context is gone, and the ladder may unload its idle model), else those that
    /// needed no more than `free` bytes.
    pub(super) fn wake_memory_waiters(
        &mut self,
        b: &mut Batch,
        free: Option<u64>,
    ) -> Result<(), StoreError> {
        let now = (self.now)();
        // A wait of unknown need (a decode that failed even alone) is retried on time only.
        let (wake, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut b.memory_waiters)
            .into_iter()
            .partition(|&(_, need)| need != u64::MAX && free.is_none_or(|f| need <= f));
        b.memory_waiters = keep;
        for (id, _) in wake {
            let why = match free {
                None => "a batch ended: trying again for memory".to_string(),
                Some(f) => format!(
                    "memory freed ({:.1} GiB free): trying again",
                    f as f64 / (1u64 << 30) as f64
                ),
            };
            if self.store.wake(id, now, &why)? {
                tracing::info!(job = %id, "{why}");
            }
        }
        Ok(())
    }
}
