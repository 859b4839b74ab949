//! Batches in sled (schema 9): the records (`batches`), each batch's jobs (`batch_jobs`) and
//! their counts per state (`batch_counts`), and the open ones (`open_batches`, with their
//! number in `meta/open_batch_count`). The counts move inside the transaction that moves a
//! job ([`Tx::count_in_batch`], called by `Tx::index` and `Tx::unindex`), so a batch's status
//! costs two reads however many jobs it has.

use sled::transaction::abort;

use super::trees::{meta, t};
use super::tx::{enc, Tx, TxResult};
use super::{codec, keys, Result, SledStore, StoreError};
use crate::batch::{self, BatchRecord, BatchTally, BatchView, LineError, NewBatch};
use crate::job::{BatchId, Counts, Job, JobId, JobState, Millis};
use crate::queue::{Batches, Queue};

/// `n` added to `slot` (`delta` > 0) or taken from it, saturating.
fn add(slot: &mut u64, n: u64, delta: i8) {
    *slot = if delta < 0 {
        slot.saturating_sub(n)
    } else {
        slot.saturating_add(n)
    };
}

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

    /// A damaged tally restarts from zero: a figure for people, not a reason to refuse work.
    fn batch_tally(&self, id: BatchId) -> TxResult<BatchTally> {
        Ok(match self.0[t::BATCH_COUNTS].get(keys::batch(id))? {
            Some(v) => codec::decode(&v).unwrap_or_default(),
            None => BatchTally::default(),
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

    /// Add `delta` to the count of the job's state in its batch, and its tokens to the
    /// batch's (an active job's `max_tokens`; a succeeded one's and what it generated).
    /// (`Tx::index`, which every move ends with, then settles the batch.)
    pub(super) fn count_in_batch(&self, job: &Job, delta: i8) -> TxResult<()> {
        let Some(b) = job.batch else { return Ok(()) };
        let max = u64::from(job.spec.params.max_tokens);
        self.change_tally(b, &|tally| {
            add(tally.counts.slot(job.state.kind()), 1, delta);
            match &job.state {
                JobState::Succeeded { usage, .. } => {
                    add(&mut tally.tokens.done_max, max, delta);
                    add(
                        &mut tally.tokens.done_completion,
                        usage.completion_tokens,
                        delta,
                    );
                }
                s if !s.kind().is_terminal() => add(&mut tally.tokens.active_max, max, delta),
                _ => {}
            }
        })
    }

    /// The count of `kind` in batch `b` only (a quarantined job, whose value is gone).
    pub(super) fn count_kind_in_batch(
        &self,
        b: BatchId,
        kind: crate::job::StateKind,
        delta: i8,
    ) -> TxResult<()> {
        self.change_tally(b, &|tally| add(tally.counts.slot(kind), 1, delta))
    }

    fn change_tally(&self, b: BatchId, f: &dyn Fn(&mut BatchTally)) -> TxResult<()> {
        let mut tally = self.batch_tally(b)?;
        f(&mut tally);
        self.0[t::BATCH_COUNTS].insert(&keys::batch(b), enc(&tally)?)?;
        Ok(())
    }

    /// The batch is in the open set exactly while `batch::is_open` says so; when it leaves
    /// it, its record says when (`ended`), and a batch opened again (a retry) forgets it.
    ///
    /// Every move of a batch's job ends here, so the record is read only when its `sealed`
    /// decides: a listed batch with active jobs stays open whatever it says, and an unlisted
    /// one was sealed when it left (an unsealed batch is always open).
    pub(super) fn settle_batch(&self, b: BatchId, now: Millis) -> TxResult<()> {
        let counts = self.batch_tally(b)?.counts;
        let listed = self.0[t::OPEN_BATCHES].get(keys::batch(b))?.is_some();
        if (counts.active() > 0) == listed {
            return Ok(());
        }
        let Some(mut record) = self.batch_record(b)? else {
            return Ok(());
        };
        let open = batch::is_open(&record, &counts);
        if open == listed {
            return Ok(());
        }
        self.set_open(b, open)?;
        record.ended = (!open).then_some(now);
        self.put_batch(&record)
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

    /// Change a batch's record with `f`, then settle it. Whether the batch exists.
    fn change_batch(
        &self,
        id: BatchId,
        now: Millis,
        f: &dyn Fn(&mut BatchRecord),
    ) -> TxResult<bool> {
        let Some(mut record) = self.batch_record(id)? else {
            return Ok(false);
        };
        f(&mut record);
        self.put_batch(&record)?;
        self.settle_batch(id, now)?;
        Ok(true)
    }
}

impl SledStore {
    fn view(&self, id: BatchId) -> Result<Option<BatchView>> {
        let Some(v) = self.tree(t::BATCHES).get(keys::batch(id))? else {
            return Ok(None);
        };
        let record: BatchRecord = codec::decode(&v)?;
        let tally: BatchTally = match self.tree(t::BATCH_COUNTS).get(keys::batch(id))? {
            Some(v) => codec::decode(&v).unwrap_or_default(),
            None => BatchTally::default(),
        };
        Ok(Some(BatchView {
            record,
            counts: tally.counts,
            tokens: tally.tokens,
        }))
    }

    /// The batches of the first `limit` keys (batch ids) of `keys`.
    fn views_of(
        &self,
        keys: impl Iterator<Item = sled::Result<sled::IVec>>,
        limit: usize,
    ) -> Result<Vec<BatchView>> {
        let mut out = Vec::new();
        for k in keys {
            if out.len() >= limit {
                break;
            }
            if let Some(v) = keys::batch_from(&k?).map(|b| self.view(b)).transpose()? {
                out.extend(v);
            }
        }
        Ok(out)
    }

    /// A batch's jobs in enqueue order, after `after`, read as they are needed.
    pub(super) fn batch_job_ids(
        &self,
        id: BatchId,
        after: Option<JobId>,
    ) -> impl Iterator<Item = Result<JobId>> {
        let start = keys::batch_job(id, JobId(after.map_or(0, |a| a.0.saturating_add(1))));
        let end = keys::batch_job(BatchId(id.0.saturating_add(1)), JobId(0));
        self.tree(t::BATCH_JOBS)
            .range(start..end)
            .keys()
            .filter_map(|k| match k {
                Ok(k) => keys::batch_job_parts(&k).map(|(_, j)| Ok(j)),
                Err(e) => Some(Err(e.into())),
            })
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
        self.views_of(self.tree(t::BATCHES).range(..end).keys().rev(), limit)
    }

    fn open_batches(&self, limit: usize) -> Result<(Vec<BatchView>, u64)> {
        let out = self.views_of(self.tree(t::OPEN_BATCHES).iter().keys().rev(), limit)?;
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
        self.batch_job_ids(id, after)
            .take(limit.unwrap_or(usize::MAX))
            .collect()
    }

    fn seal_batch(&self, id: BatchId, now: Millis) -> Result<bool> {
        let was_open = self.transact(|tx| {
            let Some(record) = tx.batch_record(id)? else {
                return abort(StoreError::NoSuchBatch(id));
            };
            if record.sealed.is_some() {
                return Ok(false);
            }
            tx.change_batch(id, now, &|r| r.sealed = Some(now))
        })?;
        self.flush()?;
        Ok(was_open)
    }

    fn create_batch(&self, spec: &NewBatch, now: Millis) -> Result<BatchView> {
        let record = self.transact(|tx| tx.new_batch(spec, now))?;
        self.flush()?;
        Ok(BatchView {
            record,
            counts: Counts::default(),
            tokens: Default::default(),
        })
    }

    fn fail_batch(&self, id: BatchId, errors: &[LineError], now: Millis) -> Result<()> {
        let exists = self.transact(|tx| {
            tx.change_batch(id, now, &|r| {
                r.errors = errors.to_vec();
                r.sealed = Some(now);
            })
        })?;
        self.flush()?;
        if exists {
            Ok(())
        } else {
            Err(StoreError::NoSuchBatch(id))
        }
    }

    fn set_batch_cancel(
        &self,
        id: BatchId,
        requested: Option<Millis>,
        now: Millis,
    ) -> Result<bool> {
        let exists =
            self.transact(|tx| tx.change_batch(id, now, &|r| r.cancel_requested = requested))?;
        self.flush()?;
        Ok(exists)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{result_for, spec, temp_store};
    use super::*;
    use crate::batch::BatchStatus;
    use crate::job::StateKind;
    use crate::queue::{BatchTarget, EnqueueOutcome, JobReads, JobWrites, NewJob};

    fn doc(name: &str) -> NewJob {
        NewJob {
            spec: spec(name),
            text: format!("text of {name}"),
        }
    }

    fn new(name: &str, deadline: Option<Millis>) -> BatchTarget {
        BatchTarget::New(NewBatch {
            name: Some(name.into()),
            metadata: vec![("team".into(), "ops".into())],
            deadline,
            source: "test".into(),
            api: None,
        })
    }

    /// A batch of two documents `a` and `b`, enqueued at 10 and sealed at 11.
    fn sealed_pair(store: &SledStore) -> BatchId {
        let b = store
            .enqueue_in(&[doc("a"), doc("b")], false, 10, &new("n", None))
            .unwrap()
            .batch
            .unwrap();
        store.seal_batch(b, 11).unwrap();
        b
    }

    #[test]
    fn a_batch_is_made_with_its_first_new_job_and_holds_only_the_jobs_it_added() {
        let (_d, store) = temp_store();
        let first = store
            .enqueue_in(&[doc("a"), doc("b")], false, 10, &new("night", None))
            .unwrap();
        let b1 = first.batch.expect("a batch");
        assert_eq!(b1, BatchId(1));
        let v = store.batch(b1).unwrap().unwrap();
        assert_eq!(v.record.spec.name.as_deref(), Some("night"));
        assert_eq!(v.counts.queued, 2);
        assert_eq!(v.status(), BatchStatus::Validating);
        assert_eq!(store.open_batches(10).unwrap().1, 1);

        // The same documents again: they are jobs already, and no batch is made.
        let again = store
            .enqueue_in(&[doc("a"), doc("b")], false, 11, &new("again", None))
            .unwrap();
        assert_eq!(again.batch, None);
        assert!(again
            .outcomes
            .iter()
            .all(|o| matches!(o, EnqueueOutcome::Existing(..))));
        assert_eq!(store.batches(None, 10).unwrap().len(), 1);

        // One old and one new: the new batch holds the new job only; the old stays in b1.
        let mixed = store
            .enqueue_in(&[doc("a"), doc("c")], false, 12, &new("mixed", None))
            .unwrap();
        let b2 = mixed.batch.unwrap();
        assert_eq!(store.batch_jobs(b2, None, None).unwrap(), vec![JobId(3)]);
        assert_eq!(store.job(JobId(1)).unwrap().unwrap().batch, Some(b1));

        // A later part of the first enqueue joins b1, then it is sealed.
        let part = store
            .enqueue_in(&[doc("d")], false, 13, &BatchTarget::Add(b1))
            .unwrap();
        assert_eq!(part.batch, Some(b1));
        assert_eq!(
            store.batch_jobs(b1, None, None).unwrap(),
            vec![JobId(1), JobId(2), JobId(4)]
        );
        assert_eq!(
            store.batch_jobs(b1, Some(JobId(1)), Some(1)).unwrap(),
            vec![JobId(2)]
        );
        assert!(store.seal_batch(b1, 14).unwrap());
        assert!(!store.seal_batch(b1, 15).unwrap(), "sealed once");
        assert_eq!(
            store.batch(b1).unwrap().unwrap().status(),
            BatchStatus::InProgress
        );

        // A batch that does not exist: refused, nothing enqueued.
        let err = store
            .enqueue_in(&[doc("e")], false, 16, &BatchTarget::Add(BatchId(99)))
            .unwrap_err();
        assert!(matches!(err, StoreError::NoSuchBatch(BatchId(99))), "{err}");
        assert_eq!(store.counts().unwrap().total(), 4);

        // Newest first, in pages.
        let ids: Vec<BatchId> = store
            .batches(None, 10)
            .unwrap()
            .iter()
            .map(|v| v.record.id)
            .collect();
        assert_eq!(ids, vec![b2, b1]);
        let page: Vec<BatchId> = store
            .batches(Some(b2), 10)
            .unwrap()
            .iter()
            .map(|v| v.record.id)
            .collect();
        assert_eq!(page, vec![b1]);
    }

    #[test]
    fn a_batch_completes_when_its_last_job_ends_and_pruning_keeps_its_counts() {
        let (_d, store) = temp_store();
        let b = sealed_pair(&store);
        for now in [12, 13] {
            let job = store.claim(now, 60_000).unwrap().unwrap();
            assert_eq!(
                store.open_batches(10).unwrap().1,
                1,
                "open while a job runs"
            );
            store.complete(job.id, &result_for(&job, now), now).unwrap();
        }
        let v = store.batch(b).unwrap().unwrap();
        assert_eq!(v.status(), BatchStatus::Completed);
        assert_eq!(v.request_counts().completed, 2);
        assert_eq!(store.open_batches(10).unwrap(), (vec![], 0));

        // Retried, it is open again; finished again and pruned, it still counts its jobs.
        store.retry(JobId(1), 14, false).unwrap();
        assert_eq!(
            store.batch(b).unwrap().unwrap().status(),
            BatchStatus::InProgress
        );
        assert_eq!(store.open_batches(10).unwrap().1, 1);
        let job = store.claim(15, 60_000).unwrap().unwrap();
        store.complete(job.id, &result_for(&job, 15), 15).unwrap();
        assert_eq!(store.prune(100).unwrap(), 2);
        let v = store.batch(b).unwrap().unwrap();
        assert_eq!(
            (v.counts.succeeded, v.status()),
            (2, BatchStatus::Completed)
        );
        assert!(store.batch_jobs(b, None, None).unwrap().is_empty());
    }

    #[test]
    fn a_cancelled_batch_is_cancelling_until_its_jobs_stop() {
        let (_d, store) = temp_store();
        let b = sealed_pair(&store);
        let running = store.claim(12, 60_000).unwrap().unwrap();
        assert!(store.set_batch_cancel(b, Some(13), 13).unwrap());
        assert!(!store.set_batch_cancel(BatchId(9), Some(13), 13).unwrap());
        store.person_cancel(JobId(2), 13, true).unwrap();
        assert_eq!(
            store.batch(b).unwrap().unwrap().status(),
            BatchStatus::Cancelling
        );
        store.cancel(running.id, 14).unwrap();
        let v = store.batch(b).unwrap().unwrap();
        assert_eq!(
            (v.status(), v.counts.cancelled),
            (BatchStatus::Cancelled, 2)
        );
        assert_eq!(store.open_batches(10).unwrap().1, 0);
        // A retry of the batch clears the request and runs its jobs again.
        store.set_batch_cancel(b, None, 15).unwrap();
        store.retry(JobId(1), 15, false).unwrap();
        assert_eq!(
            store.batch(b).unwrap().unwrap().status(),
            BatchStatus::InProgress
        );
    }

    #[test]
    fn jobs_not_started_by_the_deadline_expire_and_the_batch_with_them() {
        let (_d, store) = temp_store();
        let docs = [doc("a"), doc("b"), doc("c"), doc("d")];
        let b = store
            .enqueue_in(&docs, false, 10, &new("n", Some(1_000)))
            .unwrap()
            .batch
            .unwrap();
        store.seal_batch(b, 11).unwrap();
        assert_eq!(
            store.next_due().unwrap(),
            Some(1_000),
            "the worker wakes for it"
        );
        let done = store.claim(20, 60_000).unwrap().unwrap();
        store.complete(done.id, &result_for(&done, 30), 30).unwrap();
        let running = store.claim(40, 60_000).unwrap().unwrap();
        let failed = store.claim(50, 60_000).unwrap().unwrap();
        store.fail(failed.id, "boom", false, 60, 0.5).unwrap();
        assert_eq!(store.expire_due(999).unwrap(), 0, "not yet");
        // At the deadline: the queued job and the failed one waiting for its retry expire;
        // the running one runs on, and the finished one keeps its result.
        assert_eq!(store.expire_due(1_000).unwrap(), 2);
        let state = |id| store.job(id).unwrap().unwrap().state.kind();
        assert_eq!(state(JobId(4)), StateKind::Expired);
        assert_eq!(state(failed.id), StateKind::Expired);
        assert_eq!(state(running.id), StateKind::Running);
        assert!(store.result(done.id).unwrap().is_some());
        assert_eq!(
            store.batch(b).unwrap().unwrap().status(),
            BatchStatus::InProgress
        );
        store
            .complete(running.id, &result_for(&running, 1_100), 1_100)
            .unwrap();
        let v = store.batch(b).unwrap().unwrap();
        assert_eq!(v.status(), BatchStatus::Expired);
        assert_eq!(
            (v.request_counts().completed, v.request_counts().failed),
            (2, 2)
        );
        assert_eq!(store.next_due().unwrap(), None);
        // A claim past the deadline expires first: nothing is claimed of a late batch.
        let late = store
            .enqueue_in(&[doc("e")], false, 1_200, &new("late", Some(1_300)))
            .unwrap();
        assert!(store.claim(1_400, 60_000).unwrap().is_none());
        let e = store.batch(late.batch.unwrap()).unwrap().unwrap();
        assert_eq!(e.counts.expired, 1);
        // Retried by a person, an expired job runs again: past the deadline, without it.
        store.retry(JobId(4), 1_500, false).unwrap();
        assert_eq!(state(JobId(4)), StateKind::Queued);
        assert_eq!(store.expire_due(1_600).unwrap(), 0);
        assert_eq!(store.claim(1_700, 60_000).unwrap().unwrap().id, JobId(4));
    }

    #[test]
    fn among_equal_priorities_the_earliest_deadline_is_claimed_first() {
        let (_d, store) = temp_store();
        let early = |name: &str| new(name, Some(5_000));
        store
            .enqueue_in(&[doc("none")], false, 10, &new("none", None))
            .unwrap();
        store
            .enqueue_in(&[doc("late")], false, 11, &new("late", Some(9_000)))
            .unwrap();
        store
            .enqueue_in(&[doc("early")], false, 12, &early("early"))
            .unwrap();
        let mut high = doc("high");
        high.spec.priority = 1;
        store
            .enqueue_in(&[high], false, 13, &new("high", None))
            .unwrap();
        // `show`'s position: the jobs ahead in that order.
        let ahead: Vec<Option<u64>> = (1..=4)
            .map(|id| store.ahead_of(JobId(id)).unwrap())
            .collect();
        assert_eq!(ahead, [Some(3), Some(2), Some(1), Some(0)]);
        let order: Vec<String> = (0..4)
            .map(|i| store.claim(20 + i, 60_000).unwrap().unwrap().spec.custom_id)
            .collect();
        assert_eq!(
            store.ahead_of(JobId(1)).unwrap(),
            None,
            "running: no place in line"
        );
        assert_eq!(order, ["high", "early", "late", "none"]);
        assert_eq!(store.job(JobId(3)).unwrap().unwrap().deadline, Some(5_000));
    }

    /// Every kind of move, chosen by a seeded generator, 800 of them, over jobs of several
    /// batches (new ones and later parts of earlier ones), cancels and retries of batches,
    /// and damaged values: after each, every batch's kept counts equal a count of its jobs'
    /// states, its listing equals its jobs, and the open set (and its size) equals the
    /// batches `batch::is_open` calls open.
    #[test]
    fn the_counts_every_move_keeps_equal_a_count_of_each_batchs_jobs() {
        let (_d, store) = temp_store();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n.max(1)
        };
        let mut now = 1_000u64;
        let mut made = 0usize;
        let mut batches: Vec<BatchId> = Vec::new();
        let mut quarantined: Vec<BatchId> = Vec::new();
        for step in 0..800 {
            now += 1 + next(40_000);
            let some = JobId(1 + next((made as u64).max(1)));
            match next(14) {
                0 | 1 => {
                    let target = match (batches.is_empty(), next(3)) {
                        (false, 0) => {
                            BatchTarget::Add(batches[next(batches.len() as u64) as usize])
                        }
                        _ => new(&format!("b{step}"), Some(now + next(100_000))),
                    };
                    let items: Vec<NewJob> = (0..1 + next(4))
                        .map(|_| {
                            // Now and then a document that is a job already.
                            if made > 0 && next(5) == 0 {
                                return doc(&format!("d{}", 1 + next(made as u64)));
                            }
                            made += 1;
                            doc(&format!("d{made}"))
                        })
                        .collect();
                    let got = store.enqueue_in(&items, false, now, &target).unwrap();
                    if let (BatchTarget::New(_), Some(b)) = (&target, got.batch) {
                        batches.push(b);
                    }
                    if next(2) == 0 {
                        if let Some(b) = got.batch {
                            store.seal_batch(b, now).unwrap();
                        }
                    }
                }
                2 | 3 => {
                    if let Some(job) = store.claim(now, 60_000).unwrap() {
                        match next(4) {
                            0 => store.complete(job.id, &result_for(&job, now), now).unwrap(),
                            1 => drop(store.fail(job.id, "boom", next(2) == 0, now, 0.5).unwrap()),
                            2 => store.release(job.id, now, "shutdown").unwrap(),
                            _ => store.defer(job.id, now, now + 50_000, "memory").unwrap(),
                        }
                    }
                }
                4 => drop(store.promote_due(now).unwrap()),
                5 => drop(store.person_cancel(some, now, next(2) == 0)),
                6 => drop(store.retry(some, now, next(2) == 0)),
                7 => drop(store.recover(now).unwrap()),
                8 if !batches.is_empty() => {
                    let b = batches[next(batches.len() as u64) as usize];
                    let cancel = next(2) == 0;
                    store
                        .set_batch_cancel(b, cancel.then_some(now), now)
                        .unwrap();
                }
                10 => drop(store.expire_due(now).unwrap()),
                9 if made > 0 => {
                    if let Some(job) = store.job(some).unwrap() {
                        // A quarantined job's tokens are not known any more: its batch's are
                        // not checked after.
                        quarantined.extend(job.batch);
                        store.damage_job_for_tests(some);
                        drop(store.job(some).unwrap());
                    }
                }
                _ => drop(store.claim(now, 60_000).unwrap()),
            }
            let jobs = store.list(&Default::default()).unwrap();
            let mut open = Vec::new();
            for &b in &batches {
                let mut scanned = Counts::default();
                let mut listed = Vec::new();
                let mut tokens = batch::BatchTokens::default();
                for j in jobs.iter().filter(|j| j.batch == Some(b)) {
                    *scanned.slot(j.state.kind()) += 1;
                    listed.push(j.id);
                    let max = u64::from(j.spec.params.max_tokens);
                    match &j.state {
                        JobState::Succeeded { usage, .. } => {
                            tokens.done_max += max;
                            tokens.done_completion += usage.completion_tokens;
                        }
                        s if !s.kind().is_terminal() => tokens.active_max += max,
                        _ => {}
                    }
                }
                let v = store.batch(b).unwrap().unwrap();
                assert_eq!(v.counts, scanned, "step {step}: {b}");
                if !quarantined.contains(&b) {
                    assert_eq!(v.tokens, tokens, "step {step}: {b}'s tokens");
                }
                assert_eq!(
                    store.batch_jobs(b, None, None).unwrap(),
                    listed,
                    "step {step}"
                );
                let is_open = batch::is_open(&v.record, &v.counts);
                assert_eq!(v.record.ended.is_none(), is_open, "step {step}: {b} ended");
                if is_open {
                    open.push(b);
                }
            }
            open.reverse();
            // The deadlines index holds exactly the jobs not started that have a deadline.
            let mut waiting: Vec<(Millis, JobId)> = jobs
                .iter()
                .filter(|j| matches!(j.state.kind(), StateKind::Queued | StateKind::Failed))
                .filter_map(|j| j.deadline.map(|d| (d, j.id)))
                .collect();
            waiting.sort();
            let indexed: Vec<(Millis, JobId)> = store
                .tree(t::DEADLINES)
                .iter()
                .keys()
                .map(|k| keys::delayed_parts(&k.unwrap()).unwrap())
                .collect();
            assert_eq!(indexed, waiting, "step {step}");
            let (views, total) = store.open_batches(usize::MAX).unwrap();
            let got: Vec<BatchId> = views.iter().map(|v| v.record.id).collect();
            assert_eq!(got, open, "step {step}");
            assert_eq!(total, open.len() as u64, "step {step}");
        }
        assert!(batches.len() > 20, "{} batches", batches.len());
        let all: Vec<_> = batches
            .iter()
            .map(|b| store.batch(*b).unwrap().unwrap())
            .collect();
        for status in [
            BatchStatus::InProgress,
            BatchStatus::Completed,
            BatchStatus::Cancelled,
        ] {
            assert!(
                all.iter().any(|v| v.status() == status),
                "no batch ended {status}"
            );
        }
        assert!(
            all.iter().any(|v| v.counts.dead > 0),
            "a dead job in a batch"
        );
    }
}
