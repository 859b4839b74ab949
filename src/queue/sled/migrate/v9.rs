//! Schema 8 → 9 (`migrations/0009_batches.md`): batches. `Job` gains `batch` and `deadline`
//! (a job enqueued before holds `None` for both: it belongs to no batch); the `ready` index's
//! keys gain the deadline between the priority and the job (none sorts last), so that among
//! equal priorities the earliest deadline runs first; four trees are new (`batches`,
//! `batch_jobs`, `batch_counts`, `open_batches`) and start empty. Every other value keeps its
//! layout and only changes its version byte ([`super::super::codec::READS_FROM`] becomes 9).
//!
//! Crash-safe without a transaction: a job already at version 9 and a `ready` key already of
//! 20 bytes are left alone, so a migration cut short simply runs again.

use serde::{Deserialize, Serialize};

use super::super::keys;
use super::super::trees::t;
use super::super::{Result, SledStore};
use crate::job::{Job, JobId, JobSpec, JobState, Millis};
use crate::queue::Queue;

/// `Job` as schemas 5 to 8 wrote it.
#[derive(Deserialize, Serialize)]
pub(super) struct JobV8 {
    pub id: JobId,
    pub spec: JobSpec,
    pub state: JobState,
    pub attempts: u32,
    pub enqueued: Millis,
    pub updated: Millis,
}

fn job_v9(j: JobV8) -> Job {
    Job {
        id: j.id,
        spec: j.spec,
        state: j.state,
        attempts: j.attempts,
        enqueued: j.enqueued,
        updated: j.updated,
        batch: None,
        deadline: None,
    }
}

/// The versions whose values this step reads: 8 (the step before rewrote 5 to 7 into 8).
const FROM: [u8; 1] = [8];

/// A `ready` key of schemas 1 to 8: the priority's 4 bytes, then the job's 8.
const OLD_READY_KEY: usize = 12;

pub fn run(store: &SledStore) -> Result<()> {
    let others: Vec<usize> = super::VERSIONED
        .into_iter()
        .filter(|&tree| tree != t::JOBS)
        .collect();
    super::relabel(store, &others, &FROM, 9)?;
    super::rewrite(store, t::JOBS, &FROM, 9, job_v9)?;
    // The new ready key of each old one; the priority's bytes are kept as they are (the same
    // encoding), the deadline is none (no job of schema 8 has one).
    let ready = store.tree(t::READY);
    for k in ready.iter().keys() {
        let k = k?;
        if k.len() != OLD_READY_KEY {
            continue;
        }
        let mut new = [0u8; 20];
        new[..4].copy_from_slice(&k[..4]);
        new[4..12].copy_from_slice(&Millis::MAX.to_be_bytes());
        new[12..].copy_from_slice(&k[4..]);
        debug_assert_eq!(keys::ready_job(&new), keys::job_from(&k[4..]));
        ready.insert(new, &[])?;
        ready.remove(&k)?;
    }
    store.flush()
}

#[cfg(test)]
mod tests {
    use super::super::super::codec;
    use super::*;
    use crate::job::{Event, StateKind};
    use crate::queue::prelude::*;
    use crate::queue::test_support::{spec, temp_store};

    /// Jobs of version 8 (one queued, in the old ready index, at two priorities) and an event:
    /// after the step, and after it again (a migration cut short runs again), every job
    /// decodes in this build's layout with no batch, the ready index has the new keys only,
    /// and claims come in the old order (priority, then id).
    #[test]
    fn jobs_of_8_gain_no_batch_and_the_ready_keys_gain_a_deadline() {
        let (_dir, store) = temp_store();
        for (id, priority) in [(1u64, 0i32), (2, 5), (3, 0)] {
            let mut s = spec(&format!("j{id}"));
            s.priority = priority;
            let job = JobV8 {
                id: JobId(id),
                spec: s,
                state: JobState::Queued,
                attempts: 0,
                enqueued: id,
                updated: id,
            };
            let key = keys::job(JobId(id));
            store
                .tree(t::JOBS)
                .insert(key, codec::encode_as(8, &job).unwrap())
                .unwrap();
            let mut old = [0u8; 12];
            old[..4].copy_from_slice(&keys::ready(priority, None, JobId(id))[..4]);
            old[4..].copy_from_slice(&key);
            store.tree(t::READY).insert(old, &[]).unwrap();
            let event = Event {
                at: 7,
                from: None,
                to: StateKind::Queued,
                chunk: None,
                reason: format!("e{id}"),
            };
            store
                .tree(t::EVENTS)
                .insert(
                    keys::event(JobId(id), id),
                    codec::encode_as(8, &event).unwrap(),
                )
                .unwrap();
        }
        for _ in 0..2 {
            run(&store).unwrap();
            for id in 1..=3 {
                let job = store.job(JobId(id)).unwrap().unwrap();
                assert_eq!((job.batch, job.deadline), (None, None));
                assert_eq!(job.spec.custom_id, format!("j{id}"));
                let events = store.events(JobId(id)).unwrap();
                assert_eq!(events[0].reason, format!("e{id}"));
            }
            let lens: Vec<usize> = store
                .tree(t::READY)
                .iter()
                .keys()
                .map(|k| k.unwrap().len())
                .collect();
            assert_eq!(lens, vec![20, 20, 20]);
        }
        let order: Vec<u64> = (0..3)
            .map(|_| store.claim(10, 60_000).unwrap().unwrap().id.0)
            .collect();
        assert_eq!(order, vec![2, 1, 3]);
    }
}
