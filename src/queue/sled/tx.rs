//! The view of every tree inside one sled transaction ([`Tx`]), with the moves that keep the
//! indexes right, and [`SledStore::transact`]. Shared by the writes of `write.rs` and `crashes.rs`.

use sled::transaction::{
    abort, ConflictableTransactionResult, TransactionError, TransactionalTree,
};
use sled::Transactional;

use super::trees::{meta, t};
use super::{codec, keys, Result, SledStore, StoreError};
use crate::job::{Event, Job, JobId, JobState, Millis};

pub(super) type TxResult<T> = ConflictableTransactionResult<T, StoreError>;

fn tx_err(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
    }
}

/// A value encoded for the store, inside a transaction.
pub(super) fn enc<T: serde::Serialize>(v: &T) -> TxResult<Vec<u8>> {
    enc_as(codec::SCHEMA_VERSION, v)
}

/// A value encoded as schema `version` (a migration's own), inside a transaction.
pub(super) fn enc_as<T: serde::Serialize>(version: u8, v: &T) -> TxResult<Vec<u8>> {
    codec::encode_as(version, v).or_else(|e| abort(e.into()))
}

/// The job's key in the `deadlines` index, if its state puts it there: a job that has not
/// started (queued, or failed and waiting for its retry) and has a deadline.
fn deadline_key(job: &Job) -> Option<[u8; 16]> {
    job.deadline
        .filter(|_| job.state.kind().waiting_to_start())
        .map(|d| keys::delayed(d, job.id))
}

/// The view of every tree inside one transaction, with the moves that keep indexes right.
pub(super) struct Tx<'a>(pub(super) &'a [TransactionalTree]);

impl Tx<'_> {
    pub(super) fn job(&self, id: JobId) -> TxResult<Option<Job>> {
        match self.0[t::JOBS].get(keys::job(id))? {
            Some(v) => Ok(Some(codec::decode(&v).or_else(|e| abort(e.into()))?)),
            None => Ok(None),
        }
    }

    pub(super) fn must_job(&self, id: JobId) -> TxResult<Job> {
        match self.job(id)? {
            Some(j) => Ok(j),
            None => abort(StoreError::NoSuchJob(id)),
        }
    }

    pub(super) fn put_job(&self, job: &Job) -> TxResult<()> {
        self.0[t::JOBS].insert(&keys::job(job.id), enc(job)?)?;
        Ok(())
    }

    pub(super) fn counter(&self, key: &[u8]) -> TxResult<u64> {
        let current = match self.0[t::META].get(key)? {
            Some(v) => codec::decode::<u64>(&v).or_else(|e| abort(e.into()))?,
            None => 1,
        };
        self.0[t::META].insert(key, enc(&(current + 1))?)?;
        Ok(current)
    }

    /// Add `delta` (saturating at 0 and `u64::MAX`) to the total under `key` in [`META`]
    /// (absent: 0); the new total. A damaged total restarts from 0: a figure for `status`,
    /// not a reason to refuse work.
    pub(super) fn add_to(&self, key: &[u8], delta: i128) -> TxResult<u64> {
        let current = match self.0[t::META].get(key)? {
            Some(v) => codec::decode::<u64>(&v).unwrap_or(0),
            None => 0,
        };
        let total = (i128::from(current) + delta).clamp(0, i128::from(u64::MAX)) as u64;
        self.0[t::META].insert(key, enc(&total)?)?;
        Ok(total)
    }

    pub(super) fn event(&self, id: JobId, event: &Event) -> TxResult<()> {
        let seq = self.counter(meta::EVENT_SEQ)?;
        self.0[t::EVENTS].insert(&keys::event(id, seq), enc(event)?)?;
        Ok(())
    }

    /// Remove the job from the indexes its current state puts it in, its batch's count
    /// included.
    pub(super) fn unindex(&self, job: &Job) -> TxResult<()> {
        self.unindex_state(job)?;
        self.count_in_batch(job, -1)
    }

    /// [`Tx::unindex`] but for its batch's count: a pruned job stays counted in its batch.
    pub(super) fn unindex_state(&self, job: &Job) -> TxResult<()> {
        let id = job.id;
        if let Some(key) = deadline_key(job) {
            self.0[t::DEADLINES].remove(&key)?;
        }
        self.0[t::BY_STATE].remove(&keys::by_state(job.state.kind(), id))?;
        self.add_to(&meta::jobs_in(job.state.kind()), -1)?;
        match &job.state {
            JobState::Queued => {
                self.0[t::READY].remove(&keys::ready(job.spec.priority, job.deadline, id))?;
                if let Some(due) = job.spec.not_before {
                    self.0[t::DELAYED].remove(&keys::delayed(due, id))?;
                }
            }
            JobState::Failed {
                next_attempt_at, ..
            } => {
                self.0[t::DELAYED].remove(&keys::delayed(*next_attempt_at, id))?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Put the job into the indexes its current state calls for.
    pub(super) fn index(&self, job: &Job, now: Millis) -> TxResult<()> {
        let id = job.id;
        if let Some(key) = deadline_key(job) {
            self.0[t::DEADLINES].insert(&key, &[])?;
        }
        self.0[t::BY_STATE].insert(&keys::by_state(job.state.kind(), id), &[])?;
        self.add_to(&meta::jobs_in(job.state.kind()), 1)?;
        match &job.state {
            JobState::Queued => match job.spec.not_before {
                Some(due) if due > now => {
                    self.0[t::DELAYED].insert(&keys::delayed(due, id), &[])?;
                }
                _ => {
                    let key = keys::ready(job.spec.priority, job.deadline, id);
                    self.0[t::READY].insert(&key, &[])?;
                }
            },
            JobState::Failed {
                next_attempt_at, ..
            } => {
                self.0[t::DELAYED].insert(&keys::delayed(*next_attempt_at, id), &[])?;
            }
            _ => {}
        }
        self.count_in_batch(job, 1)?;
        match job.batch {
            Some(b) => self.settle_batch(b, now),
            None => Ok(()),
        }
    }

    /// Move a job to a new state: check the move is legal, keep the indexes right, log it.
    pub(super) fn transition(
        &self,
        job: &mut Job,
        next: JobState,
        now: Millis,
        reason: String,
        chunk: Option<u32>,
    ) -> TxResult<()> {
        let from = job.state.kind();
        let to = next.kind();
        if !job.state.can_become(to) {
            return abort(StoreError::IllegalTransition {
                id: job.id,
                from,
                to,
            });
        }
        self.unindex(job)?;
        job.state = next;
        job.updated = now;
        self.index(job, now)?;
        self.put_job(job)?;
        self.event(
            job.id,
            &Event {
                at: now,
                from: Some(from),
                to,
                chunk,
                reason,
            },
        )
    }
}

impl SledStore {
    pub(super) fn transact<T>(&self, f: impl Fn(&Tx) -> TxResult<T>) -> Result<T> {
        let result = self.trees[..]
            .transaction(|trees| f(&Tx(trees)))
            .map_err(tx_err)?;
        Ok(result)
    }
}
