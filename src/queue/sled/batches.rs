//! Batches in sled (schema 9): the records (`batches`), each batch's jobs (`batch_jobs`) and
//! their counts per state (`batch_counts`), and the open ones (`open_batches`, with their
//! number in `meta/open_batch_count`). The counts move inside the transaction that moves a
//! job ([`Tx::count_in_batch`], called by `Tx::index` and `Tx::unindex`), so a batch's status
//! costs two reads however many jobs it has.

use sled::transaction::abort;

use super::trees::{meta, t};
use super::tx::{enc, Tx, TxResult};
use super::{codec, keys, Result, SledStore, StoreError};
use crate::batch::{self, BatchRecord, BatchView, NewBatch};
use crate::job::{BatchId, Counts, Job, JobId, Millis};
use crate::queue::{Batches, Queue};

impl Tx<'_> {
    pub(super) fn batch_record(&self, id: BatchId) -> TxResult<Option<BatchRecord>> {
        match self.0[t::BATCHES].get(keys::batch(id))? {
            Some(v) => Ok(Some(codec::decode(&v).or_else(|e| abort(e.into()))?)),
            None => Ok(None),
        }
    }

    fn put_batch(&self, record: &BatchRecord) -> TxResult<()> {
        self.0[t::BATCHES].insert(&keys::batch(record.id), enc(record)?)?;
        Ok(())
    }

    /// A damaged count restarts from zero: a figure for people, not a reason to refuse work.
    fn batch_counts(&self, id: BatchId) -> TxResult<Counts> {
        Ok(match self.0[t::BATCH_COUNTS].get(keys::batch(id))? {
            Some(v) => codec::decode(&v).unwrap_or_default(),
            None => Counts::default(),
        })
    }

    /// Make a batch (its number from `meta/next_batch_id`), open.
    pub(super) fn new_batch(&self, spec: &NewBatch, now: Millis) -> TxResult<BatchRecord> {
        let id = BatchId(self.counter(meta::NEXT_BATCH_ID)?);
        let record = BatchRecord::new(id, spec, now);
        self.put_batch(&record)?;
        self.set_open(id, true)?;
        Ok(record)
    }

    /// The job joins its batch's list (at enqueue; its count comes with `Tx::index`).
    pub(super) fn list_in_batch(&self, job: &Job) -> TxResult<()> {
        if let Some(b) = job.batch {
            self.0[t::BATCH_JOBS].insert(&keys::batch_job(b, job.id), &[])?;
        }
        Ok(())
    }

    /// Add `delta` to the count of the job's state in its batch, and keep the batch in the
    /// open set while it is open.
    pub(super) fn count_in_batch(&self, job: &Job, delta: i8) -> TxResult<()> {
        let Some(b) = job.batch else { return Ok(()) };
        self.count_kind_in_batch(b, job.state.kind(), delta)
    }

    pub(super) fn count_kind_in_batch(
        &self,
        b: BatchId,
        kind: crate::job::StateKind,
        delta: i8,
    ) -> TxResult<()> {
        let mut counts = self.batch_counts(b)?;
        let was_active = counts.active() > 0;
        let slot = counts.slot(kind);
        *slot = if delta < 0 {
            slot.saturating_sub(delta.unsigned_abs().into())
        } else {
            slot.saturating_add(delta as u64)
        };
        self.0[t::BATCH_COUNTS].insert(&keys::batch(b), enc(&counts)?)?;
        let active = counts.active() > 0;
        if active && !was_active {
            self.set_open(b, true)?;
        } else if was_active && !active {
            if let Some(record) = self.batch_record(b)? {
                self.set_open(b, batch::is_open(&record, &counts))?;
            }
        }
        Ok(())
    }

    /// Put the batch in the open set or take it out, keeping the set's size.
    fn set_open(&self, id: BatchId, open: bool) -> TxResult<()> {
        let key = keys::batch(id);
        if open {
            if self.0[t::OPEN_BATCHES].insert(&key, &[])?.is_none() {
                self.add_to(meta::OPEN_BATCH_COUNT, 1)?;
            }
        } else if self.0[t::OPEN_BATCHES].remove(&key)?.is_some() {
            self.add_to(meta::OPEN_BATCH_COUNT, -1)?;
        }
        Ok(())
    }

    /// Change a batch's record with `f`, and its place in the open set with it. Whether the
    /// batch exists.
    fn change_batch(&self, id: BatchId, f: &dyn Fn(&mut BatchRecord)) -> TxResult<bool> {
        let Some(mut record) = self.batch_record(id)? else {
            return Ok(false);
        };
        f(&mut record);
        self.put_batch(&record)?;
        let counts = self.batch_counts(id)?;
        self.set_open(id, batch::is_open(&record, &counts))?;
        Ok(true)
    }
}

impl SledStore {
    fn view(&self, id: BatchId) -> Result<Option<BatchView>> {
        let Some(v) = self.tree(t::BATCHES).get(keys::batch(id))? else {
            return Ok(None);
        };
        let record: BatchRecord = codec::decode(&v)?;
        let counts = match self.tree(t::BATCH_COUNTS).get(keys::batch(id))? {
            Some(v) => codec::decode(&v).unwrap_or_default(),
            None => Counts::default(),
        };
        Ok(Some(BatchView { record, counts }))
    }

    /// At worker start: batches whose enqueue died before it ended are sealed (an enqueue
    /// through a worker that is gone cannot go on; a direct one holds the store). The open
    /// set is small: only batches with work left are in it.
    pub(super) fn seal_left_open(&self, now: Millis) -> Result<usize> {
        let open: Vec<BatchId> = self
            .tree(t::OPEN_BATCHES)
            .iter()
            .keys()
            .filter_map(|k| k.ok().and_then(|k| keys::batch_from(&k)))
            .collect();
        let mut sealed = 0;
        for id in open {
            if self
                .view(id)?
                .is_some_and(|v| v.record.sealed.is_none() && self.seal_batch(id, now).is_ok())
            {
                sealed += 1;
            }
        }
        Ok(sealed)
    }

    /// The batch job `id` is listed in, found by a scan (a quarantined job's value no longer
    /// says; rare).
    pub(super) fn batch_listing(&self, id: JobId) -> Result<Option<BatchId>> {
        for k in self.tree(t::BATCH_JOBS).iter().keys() {
            if let Some((b, j)) = keys::batch_job_parts(&k?) {
                if j == id {
                    return Ok(Some(b));
                }
            }
        }
        Ok(None)
    }
}

impl Batches for SledStore {
    fn batch(&self, id: BatchId) -> Result<Option<BatchView>> {
        self.view(id)
    }

    fn batches(&self, before: Option<BatchId>, limit: usize) -> Result<Vec<BatchView>> {
        let end = keys::batch(before.unwrap_or(BatchId(u64::MAX)));
        let mut out = Vec::new();
        for k in self.tree(t::BATCHES).range(..end).keys().rev() {
            if out.len() >= limit {
                break;
            }
            if let Some(v) = keys::batch_from(&k?).map(|b| self.view(b)).transpose()? {
                out.extend(v);
            }
        }
        Ok(out)
    }

    fn open_batches(&self, limit: usize) -> Result<(Vec<BatchView>, u64)> {
        let mut out = Vec::new();
        for k in self.tree(t::OPEN_BATCHES).iter().keys().rev() {
            if out.len() >= limit {
                break;
            }
            if let Some(v) = keys::batch_from(&k?).map(|b| self.view(b)).transpose()? {
                out.extend(v);
            }
        }
        let total = match self.tree(t::META).get(meta::OPEN_BATCH_COUNT)? {
            Some(v) => codec::decode::<u64>(&v).unwrap_or(0),
            None => 0,
        };
        Ok((out, total))
    }

    fn batch_jobs(
        &self,
        id: BatchId,
        after: Option<JobId>,
        limit: Option<usize>,
    ) -> Result<Vec<JobId>> {
        let start = keys::batch_job(id, JobId(after.map_or(0, |a| a.0.saturating_add(1))));
        let end = keys::batch_job(BatchId(id.0.saturating_add(1)), JobId(0));
        let mut out = Vec::new();
        for k in self.tree(t::BATCH_JOBS).range(start..end).keys() {
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            if let Some((b, j)) = keys::batch_job_parts(&k?) {
                if b == id && after.is_none_or(|a| j > a) {
                    out.push(j);
                }
            }
        }
        Ok(out)
    }

    fn seal_batch(&self, id: BatchId, now: Millis) -> Result<bool> {
        let was_open = self.transact(|tx| {
            let Some(record) = tx.batch_record(id)? else {
                return abort(StoreError::NoSuchBatch(id));
            };
            if record.sealed.is_some() {
                return Ok(false);
            }
            tx.change_batch(id, &|r| r.sealed = Some(now))
        })?;
        self.flush()?;
        Ok(was_open)
    }

    fn set_batch_cancel(&self, id: BatchId, requested: Option<Millis>) -> Result<bool> {
        let exists =
            self.transact(|tx| tx.change_batch(id, &|r| r.cancel_requested = requested))?;
        self.flush()?;
        Ok(exists)
    }
}
