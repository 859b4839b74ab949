//! Stored jobs whose bytes no longer decode (a damaged disk, a bug of an older version): the
//! job is *quarantined* — its bytes kept in tree `quarantine` with the decode error, and a dead
//! stand-in put in its place — so that one bad value does not stop the worker, `list` or
//! `results`. Everything else goes on; `status` counts them.

use super::trees::{meta, t};
use super::tx::enc;
use super::{codec, keys, Result, SledStore};
use crate::job::{
    BatchId, GenParams, Job, JobId, JobSpec, JobState, Millis, ModelRef, StateKind, Task,
};
use crate::queue::{Quarantine, Quarantined, Queue};

/// The dead stand-in of a job whose value is damaged.
fn stand_in(id: JobId, batch: Option<BatchId>, error: &str, now: Millis) -> Job {
    Job {
        id,
        spec: JobSpec {
            custom_id: format!("damaged-{id}"),
            source: String::new(),
            doc_sha256: String::new(),
            doc_bytes: 0,
            task: Task::Summarize,
            system: None,
            model: ModelRef {
                name: String::new(),
                path: String::new(),
                template: None,
            },
            params: GenParams::qwen3_defaults(false),
            priority: 0,
            not_before: None,
            max_attempts: 1,
            extra_json: None,
            constraint: None,
            fallback: Vec::new(),
            auto: None,
        },
        state: JobState::Dead {
            error: format!(
                "quarantined: its stored value is damaged ({error}); the bytes are kept apart"
            ),
            attempts: 0,
        },
        attempts: 0,
        enqueued: now,
        updated: now,
        batch,
        deadline: None,
    }
}

impl Quarantine for SledStore {
    fn quarantined_count(&self) -> usize {
        self.tree(t::QUARANTINE).len()
    }

    fn quarantined(&self, id: JobId) -> Result<Option<Quarantined>> {
        match self.tree(t::QUARANTINE).get(keys::job(id))? {
            Some(v) => Ok(Some(codec::decode(&v)?)),
            None => Ok(None),
        }
    }
}

impl SledStore {
    /// Job `id`'s value `raw` does not decode (`error`): keep the bytes in quarantine, drop
    /// the job's index entries, and put a dead stand-in in its place. The stand-in.
    pub(super) fn quarantine_job(&self, id: JobId, raw: &[u8], error: &str) -> Result<Job> {
        let now = crate::now_ms();
        tracing::error!(job = %id, "stored job damaged, quarantined: {error}");
        let kept = Quarantined {
            error: error.to_string(),
            at: now,
            raw: raw.to_vec(),
        };
        // Index entries that name the job (its state, and so its keys, are unknown): found by
        // scanning the indexes. Rare, so a scan is fine.
        let mut stale: Vec<(usize, Vec<u8>)> = Vec::new();
        for kind in StateKind::ALL {
            stale.push((t::BY_STATE, keys::by_state(kind, id).to_vec()));
        }
        for k in self.tree(t::READY).iter().keys() {
            let k = k?;
            if keys::ready_job(&k) == Some(id) {
                stale.push((t::READY, k.to_vec()));
            }
        }
        for tree in [t::DELAYED, t::DEADLINES] {
            for k in self.tree(tree).iter().keys() {
                let k = k?;
                if keys::delayed_parts(&k).map(|(_, j)| j) == Some(id) {
                    stale.push((tree, k.to_vec()));
                }
            }
        }
        // Its batch counts it in its old state: found by a scan, as the indexes above.
        let batch = self.batch_listing(id)?;
        let job = stand_in(id, batch, error, now);
        self.transact(|tx| {
            for (tree, k) in &stale {
                let gone = tx.0[*tree].remove(&k[..])?;
                // The state's total loses the job it counted (schema 7), and so does its
                // batch's (schema 9).
                if *tree == t::BY_STATE && gone.is_some() {
                    if let Some(kind) = k.first().copied().and_then(StateKind::from_byte) {
                        tx.add_to(&meta::jobs_in(kind), -1)?;
                        if let Some(b) = batch {
                            tx.count_kind_in_batch(b, kind, -1)?;
                            tx.count_kind_in_batch(b, StateKind::Dead, 1)?;
                            tx.settle_batch(b, now)?;
                        }
                    }
                }
            }
            tx.0[t::QUARANTINE].insert(&keys::job(id), enc(&kept)?)?;
            tx.0[t::BY_STATE].insert(&keys::by_state(StateKind::Dead, id), &[])?;
            tx.add_to(&meta::jobs_in(StateKind::Dead), 1)?;
            tx.put_job(&job)
        })?;
        self.flush()?;
        Ok(job)
    }

    /// A job's value, or its quarantined stand-in when the value does not decode.
    pub(super) fn decode_job(&self, id: JobId, raw: &[u8]) -> Result<Job> {
        match codec::decode::<Job>(raw) {
            Ok(job) => Ok(job),
            Err(e) => self.quarantine_job(id, raw, &e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::job::{JobState, StateKind};
    use crate::queue::prelude::*;
    use crate::queue::sled::keys;
    use crate::queue::sled::trees::t;
    use crate::queue::test_support::{enqueue_n, temp_store};
    use crate::queue::JobFilter;

    #[test]
    fn a_damaged_job_is_quarantined_and_everything_else_goes_on() {
        let (_d, store) = temp_store();
        let ids = enqueue_n(&store, 3);
        // Job 2's value is damaged on disk (a length that claims exabytes).
        store.damage_job_for_tests(ids[1]);
        let garbage = store.tree(t::JOBS).get(keys::job(ids[1])).unwrap().unwrap();
        // list, claim and counts go on; the damaged job is dead, its bytes kept.
        let listed = store.list(&JobFilter::default()).unwrap();
        assert_eq!(listed.len(), 3);
        assert!(
            matches!(&listed[1].state, JobState::Dead { error, .. } if error.starts_with("quarantined"))
        );
        assert_eq!(store.quarantined_count(), 1);
        assert_eq!(
            store.quarantined(ids[1]).unwrap().unwrap().raw,
            garbage.to_vec()
        );
        let a = store.claim(2, 1000).unwrap().unwrap();
        let b = store.claim(3, 1000).unwrap().unwrap();
        assert_eq!((a.id, b.id), (ids[0], ids[2]));
        assert!(store.claim(4, 1000).unwrap().is_none());
        let counts = store.counts().unwrap();
        assert_eq!((counts.running, counts.dead, counts.queued), (2, 1, 0));
        assert_eq!(store.ids_in_state(StateKind::Dead).unwrap(), vec![ids[1]]);
    }
}
