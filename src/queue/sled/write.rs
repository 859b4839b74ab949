//! State changes. Each is one sled transaction over every tree it touches, then a flush.

use sled::transaction::abort;

use super::files::DocFile;
use super::trees::{meta, t, DOCUMENT_PART_BYTES};
use super::tx::{enc, Tx, TxResult};
use super::{codec, io_error, keys, Result, SledStore, StoreError};
use crate::job::{
    after_failure, ChunkOutput, Event, Job, JobId, JobResult, JobState, Millis, StateKind,
};
use crate::queue::identity::dedupe_key;
use crate::queue::{
    BatchTarget, EnqueueOutcome, Enqueued, JobReads, JobWrites, NewJob, Queue, TransitionOutcome,
};

pub(crate) fn custom_id_key(custom_id: &str, id: JobId) -> Vec<u8> {
    let mut k = custom_id.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&keys::job(id));
    k
}

/// Split text into parts of at most [`DOCUMENT_PART_BYTES`], on character boundaries.
pub(crate) fn split_parts(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(DOCUMENT_PART_BYTES);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        parts.push(&rest[..end]);
        rest = &rest[end..];
    }
    parts
}

impl JobWrites for SledStore {
    fn enqueue_in(
        &self,
        items: &[NewJob],
        force: bool,
        now: Millis,
        target: &BatchTarget,
    ) -> Result<Enqueued> {
        let dedupe: Vec<[u8; 32]> = items.iter().map(|i| dedupe_key(&i.spec)).collect();
        // Documents larger than one part go to files first, durable before the transaction
        // that names them (files.rs) — but not those already a job: running the same enqueue
        // again writes nothing. (A job pruned meanwhile is enqueued again with its text in
        // parts: the transaction decides, this only saves work.)
        let _writing = self.doc_writes.read().unwrap_or_else(|e| e.into_inner());
        let large: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].text.len() > DOCUMENT_PART_BYTES)
            .filter(|&i| force || !self.is_job_already(&dedupe[i]))
            .collect();
        let texts: Vec<&str> = large.iter().map(|&i| items[i].text.as_str()).collect();
        let written = self.files.write_all(&texts).map_err(io_error)?;
        let mut file_of: Vec<Option<&DocFile>> = vec![None; items.len()];
        for (&i, doc) in large.iter().zip(&written) {
            file_of[i] = Some(doc);
        }
        let out = self.transact(|tx| {
            let mut outcomes = Vec::with_capacity(items.len());
            // The batch the new jobs join: an earlier part's, or one made with the first job.
            let mut batch = match target {
                BatchTarget::Add(id) => match tx.batch_record(*id)? {
                    Some(record) => Some(record),
                    None => return abort(StoreError::NoSuchBatch(*id)),
                },
                _ => None,
            };
            for ((item, dkey), file) in items.iter().zip(&dedupe).zip(&file_of) {
                if !force {
                    if let Some(existing) = tx.0[t::DEDUPE].get(dkey)? {
                        if let Some(id) = keys::job_from(&existing) {
                            if let Some(job) = tx.job(id)? {
                                outcomes.push(EnqueueOutcome::Existing(id, job.state.kind()));
                                continue;
                            }
                        }
                    }
                }
                if let (None, BatchTarget::New(spec)) = (&batch, target) {
                    batch = Some(tx.new_batch(spec, now)?);
                }
                let id = JobId(tx.counter(meta::NEXT_JOB_ID)?);
                let job = Job {
                    id,
                    spec: item.spec.clone(),
                    state: JobState::Queued,
                    attempts: 0,
                    enqueued: now,
                    updated: now,
                    batch: batch.as_ref().map(|b| b.id),
                    deadline: batch.as_ref().and_then(|b| b.spec.deadline),
                };
                tx.put_job(&job)?;
                tx.index(&job, now)?;
                tx.list_in_batch(&job)?;
                tx.0[t::DEDUPE].insert(&dkey[..], &keys::job(id))?;
                tx.0[t::CUSTOM_IDS].insert(custom_id_key(&job.spec.custom_id, id), &[])?;
                match file {
                    Some(doc) => {
                        tx.0[t::DOCUMENT_FILES].insert(&keys::job(id), enc(doc)?)?;
                        tx.add_to(meta::DOCUMENT_FILE_BYTES, i128::from(doc.bytes))?;
                    }
                    None => {
                        for (n, part) in split_parts(&item.text).into_iter().enumerate() {
                            tx.0[t::DOCUMENTS]
                                .insert(&keys::job_part(id, n as u32), enc(&part)?)?;
                        }
                    }
                }
                tx.event(
                    id,
                    &Event {
                        at: now,
                        from: None,
                        to: StateKind::Queued,
                        chunk: None,
                        reason: format!("enqueued from {}", job.spec.source),
                    },
                )?;
                outcomes.push(EnqueueOutcome::Queued(id));
            }
            Ok(Enqueued {
                outcomes,
                batch: batch.map(|b| b.id),
            })
        });
        // A failed transaction leaves its files to the sweep: sled may have applied part of it
        // in memory before failing, so no file is removed that a job may name.
        let out = out?;
        self.flush()?;
        // A document that was a job already: its file is named by nobody.
        let unused = file_of
            .iter()
            .zip(&out.outcomes)
            .filter(|(_, o)| matches!(o, EnqueueOutcome::Existing(..)))
            .filter_map(|(f, _)| f.map(|d| d.name.as_str()));
        self.files.remove(unused);
        Ok(out)
    }

    fn promote_due(&self, now: Millis) -> Result<usize> {
        let due = self.due_in(t::DELAYED, now);
        let mut moved = 0;
        for id in due {
            moved += self.transact(|tx| {
                let Some(mut job) = tx.job(id)? else {
                    return Ok(0);
                };
                match &job.state {
                    JobState::Queued => {
                        tx.unindex(&job)?;
                        tx.index(&job, now)?;
                        Ok(1)
                    }
                    JobState::Failed { attempt, .. } => {
                        let reason = format!("retrying after backoff (attempt {attempt} failed)");
                        tx.transition(&mut job, JobState::Queued, now, reason, None)?;
                        Ok(1)
                    }
                    _ => Ok(0),
                }
            })?;
        }
        if moved > 0 {
            self.flush()?;
        }
        Ok(moved)
    }

    fn expire_due(&self, now: Millis) -> Result<usize> {
        let due = self.due_in(t::DEADLINES, now);
        let mut expired = 0;
        for id in due {
            expired += self.transact(|tx| {
                let Some(mut job) = tx.job(id)? else {
                    return Ok(0);
                };
                if !job.state.kind().waiting_to_start() || job.deadline.is_none_or(|d| d > now) {
                    return Ok(0);
                }
                let reason = "its batch's deadline passed before it started".to_string();
                tx.transition(&mut job, JobState::Expired { at: now }, now, reason, None)?;
                Ok(1)
            })?;
        }
        if expired > 0 {
            self.flush()?;
        }
        Ok(expired)
    }

    fn claim(&self, now: Millis, lease_ms: u64) -> Result<Option<Job>> {
        self.claim_matching(now, lease_ms, usize::MAX, &|_| true)
    }

    fn claim_matching(
        &self,
        now: Millis,
        lease_ms: u64,
        scan: usize,
        wanted: &dyn Fn(&Job) -> bool,
    ) -> Result<Option<Job>> {
        self.expire_due(now)?;
        self.promote_due(now)?;
        let mut after: Option<Vec<u8>> = None;
        let mut seen = 0usize;
        while seen < scan {
            let next = match &after {
                None => self.tree(t::READY).first()?,
                Some(k) => self.tree(t::READY).get_gt(k)?,
            };
            let Some((key, _)) = next else {
                return Ok(None);
            };
            after = Some(key.to_vec());
            seen += 1;
            let Some(id) = keys::ready_job(&key) else {
                self.tree(t::READY).remove(&key)?;
                continue;
            };
            match self.job(id)? {
                Some(job) if job.state == JobState::Queued && !wanted(&job) => continue,
                _ => {}
            }
            if let Some(job) = self.claim_key(&key, id, now, lease_ms)? {
                return Ok(Some(job));
            }
        }
        Ok(None)
    }

    fn claim_job(&self, id: JobId, now: Millis, lease_ms: u64) -> Result<Option<Job>> {
        self.expire_due(now)?;
        self.promote_due(now)?;
        let Some(job) = self.job(id)? else {
            return Ok(None);
        };
        let key = keys::ready(job.spec.priority, job.deadline, id);
        if job.state != JobState::Queued || self.tree(t::READY).get(key)?.is_none() {
            return Ok(None);
        }
        self.claim_key(&key, id, now, lease_ms)
    }

    fn set_plan(&self, id: JobId, total: u32, now: Millis, lease_ms: u64) -> Result<()> {
        self.change_job(id, |tx, job| {
            if let JobState::Running {
                chunks_total,
                lease_until,
                ..
            } = &mut job.state
            {
                *chunks_total = total;
                *lease_until = now + lease_ms;
                tx.put_job(job)?;
            }
            Ok(())
        })
    }

    fn heartbeat(&self, id: JobId, now: Millis, lease_ms: u64) -> Result<()> {
        self.transact(|tx| {
            let mut job = tx.must_job(id)?;
            if let JobState::Running { lease_until, .. } = &mut job.state {
                *lease_until = now + lease_ms;
                tx.put_job(&job)?;
            }
            Ok(())
        })
    }

    fn save_checkpoint(
        &self,
        id: JobId,
        chunk: u32,
        output: &ChunkOutput,
        now: Millis,
        lease_ms: u64,
    ) -> Result<()> {
        self.change_job(id, |tx, job| {
            let JobState::Running {
                attempt,
                started,
                chunks_done,
                chunks_total,
                ..
            } = job.state.clone()
            else {
                return abort(StoreError::IllegalTransition {
                    id,
                    from: job.state.kind(),
                    to: StateKind::Running,
                });
            };
            tx.0[t::CHECKPOINTS].insert(&keys::job_part(id, chunk), enc(output)?)?;
            let next = JobState::Running {
                lease_until: now + lease_ms,
                attempt,
                started,
                chunks_done: chunks_done + 1,
                chunks_total,
            };
            let reason = format!(
                "chunk {} of {} done: {} prompt + {} generated tokens in {} ms",
                chunk + 1,
                chunks_total.max(chunk + 1),
                output.usage.prompt_tokens,
                output.usage.completion_tokens,
                output.millis
            );
            tx.transition(job, next, now, reason, Some(chunk))
        })
    }

    fn discard_checkpoints(&self, id: JobId, now: Millis, reason: &str) -> Result<()> {
        let checkpoints = self.keys_of_job(t::CHECKPOINTS, id)?;
        self.change_job(id, |tx, job| {
            for k in &checkpoints {
                tx.0[t::CHECKPOINTS].remove(&k[..])?;
            }
            let mut next = job.state.clone();
            if let JobState::Running { chunks_done, .. } = &mut next {
                *chunks_done = 0;
            }
            tx.transition(job, next, now, reason.to_string(), None)
        })
    }

    fn complete(&self, id: JobId, result: &JobResult, now: Millis) -> Result<()> {
        let checkpoints = self.keys_of_job(t::CHECKPOINTS, id)?;
        self.change_job(id, |tx, job| {
            job.attempts += 1;
            tx.0[t::RESULTS].insert(&keys::job(id), enc(result)?)?;
            for k in &checkpoints {
                tx.0[t::CHECKPOINTS].remove(&k[..])?;
            }
            let next = JobState::Succeeded {
                finished: now,
                usage: result.usage,
            };
            let reason = format!(
                "succeeded: {} prompt + {} generated tokens",
                result.usage.prompt_tokens, result.usage.completion_tokens
            );
            super::crashes::job_ended(tx, id)?;
            tx.transition(job, next, now, reason, None)
        })
    }

    fn fail(
        &self,
        id: JobId,
        error: &str,
        permanent: bool,
        now: Millis,
        jitter: f64,
    ) -> Result<JobState> {
        self.change_job(id, |tx, job| {
            let attempt = match job.state {
                JobState::Running { attempt, .. } => attempt,
                _ => job.attempts + 1,
            };
            job.attempts = attempt;
            let max_attempts = if permanent {
                attempt
            } else {
                job.spec.max_attempts
            };
            let next = after_failure(attempt, max_attempts, error.to_string(), now, jitter);
            let reason = match &next {
                JobState::Dead { .. } => format!("attempt {attempt} failed, giving up: {error}"),
                _ => format!("attempt {attempt} failed: {error}"),
            };
            super::crashes::job_ended(tx, id)?;
            tx.transition(job, next.clone(), now, reason, None)?;
            Ok(next)
        })
    }

    fn release(&self, id: JobId, now: Millis, reason: &str) -> Result<()> {
        self.change_job(id, |tx, job| {
            tx.transition(job, JobState::Queued, now, reason.to_string(), None)
        })
    }

    fn defer(&self, id: JobId, now: Millis, until: Millis, reason: &str) -> Result<()> {
        self.change_job(id, |tx, job| {
            // Index under the new time: unindex happens inside transition with the old state
            // (Running holds no time index), then the Queued job is indexed as delayed.
            job.spec.not_before = Some(until);
            tx.transition(job, JobState::Queued, now, reason.to_string(), None)
        })
    }

    fn wake(&self, id: JobId, now: Millis, reason: &str) -> Result<bool> {
        self.change_job(id, |tx, job| {
            let waiting =
                job.state == JobState::Queued && job.spec.not_before.is_some_and(|d| d > now);
            if !waiting {
                return Ok(false);
            }
            tx.unindex(job)?;
            job.spec.not_before = Some(now);
            job.updated = now;
            tx.index(job, now)?;
            tx.put_job(job)?;
            tx.event(
                id,
                &Event {
                    at: now,
                    from: Some(StateKind::Queued),
                    to: StateKind::Queued,
                    chunk: None,
                    reason: reason.to_string(),
                },
            )?;
            Ok(true)
        })
    }

    fn recover(&self, now: Millis) -> Result<Vec<JobId>> {
        let mut running = self.ids_in_state(StateKind::Running)?;
        // A damaged value is quarantined here (its stand-in is dead, not running).
        let mut live = Vec::with_capacity(running.len());
        for id in running.drain(..) {
            if self
                .job(id)?
                .is_some_and(|j| j.state.kind() == StateKind::Running)
            {
                live.push(id);
            }
        }
        let running = live;
        for &id in &running {
            let done = self.checkpoint_count(id)?;
            let reason = format!(
                "recovered after the worker stopped without finishing it; resumes after {done} finished chunks"
            );
            self.release(id, now, &reason)?;
        }
        self.sweep_document_files()?;
        let sealed = self.seal_left_open(now)?;
        if sealed > 0 {
            tracing::info!(
                batches = sealed,
                "sealed batches whose enqueue ended unfinished"
            );
        }
        Ok(running)
    }

    fn cancel(&self, id: JobId, now: Millis) -> Result<TransitionOutcome> {
        self.person_moves(id, StateKind::Cancelled, now, false, |_| {
            JobState::Cancelled { at: now }
        })
    }

    fn person_cancel(
        &self,
        id: JobId,
        now: Millis,
        worker_runs: bool,
    ) -> Result<TransitionOutcome> {
        self.person_moves(id, StateKind::Cancelled, now, worker_runs, |_| {
            JobState::Cancelled { at: now }
        })
    }

    fn retry(&self, id: JobId, now: Millis, worker_runs: bool) -> Result<TransitionOutcome> {
        self.person_moves(id, StateKind::Queued, now, worker_runs, |job| {
            job.attempts = 0;
            JobState::Queued
        })
    }

    fn set_paused(&self, paused: bool) -> Result<()> {
        self.tree(t::META)
            .insert(meta::PAUSED, codec::encode(&paused)?)?;
        self.flush()
    }

    fn prune(&self, before: Millis) -> Result<usize> {
        let mut pruned = 0;
        let mut doomed_files = Vec::new();
        for kind in StateKind::ALL.into_iter().filter(|k| k.is_terminal()) {
            for id in self.ids_in_state(kind)? {
                let Some(job) = self.job(id)? else { continue };
                if job.updated >= before {
                    continue;
                }
                let mut doomed: Vec<(usize, Vec<u8>)> = Vec::new();
                for tree in [t::DOCUMENTS, t::CHECKPOINTS, t::EVENTS] {
                    for k in self.tree(tree).scan_prefix(keys::job(id)).keys() {
                        doomed.push((tree, k?.to_vec()));
                    }
                }
                let dkey = dedupe_key(&job.spec);
                let file: Option<DocFile> = match self.tree(t::DOCUMENT_FILES).get(keys::job(id))? {
                    Some(v) => codec::decode(&v).ok(),
                    None => None,
                };
                let gone = self.transact(|tx| {
                    let Some(job) = tx.job(id)? else {
                        return Ok(false);
                    };
                    if !job.state.kind().is_terminal() {
                        return Ok(false); // retried meanwhile
                    }
                    tx.0[t::DOCUMENT_FILES].remove(&keys::job(id))?;
                    if let Some(doc) = &file {
                        tx.add_to(meta::DOCUMENT_FILE_BYTES, -i128::from(doc.bytes))?;
                    }
                    // Its batch keeps counting it: the batch remembers what happened.
                    tx.unindex_state(&job)?;
                    if let Some(b) = job.batch {
                        tx.0[t::BATCH_JOBS].remove(&keys::batch_job(b, id))?;
                    }
                    tx.0[t::JOBS].remove(&keys::job(id))?;
                    tx.0[t::RESULTS].remove(&keys::job(id))?;
                    tx.0[t::CUSTOM_IDS].remove(custom_id_key(&job.spec.custom_id, id))?;
                    if tx.0[t::DEDUPE].get(dkey)?.as_deref() == Some(&keys::job(id)[..]) {
                        tx.0[t::DEDUPE].remove(&dkey[..])?;
                    }
                    for (tree, k) in &doomed {
                        tx.0[*tree].remove(&k[..])?;
                    }
                    Ok(true)
                })?;
                if !gone {
                    continue;
                }
                doomed_files.extend(file.map(|d| d.name));
                pruned += 1;
            }
        }
        // The jobs are gone on disk before their files are.
        self.flush()?;
        self.files.remove(doomed_files.iter().map(String::as_str));
        Ok(pruned)
    }
}

impl SledStore {
    /// The jobs of a (time, job) index (`delayed`, `deadlines`) whose time is `now` or before.
    fn due_in(&self, tree: usize, now: Millis) -> Vec<JobId> {
        self.tree(tree)
            .range(..keys::delayed(now.saturating_add(1), JobId(0)))
            .keys()
            .filter_map(|k| {
                k.ok()
                    .and_then(|k| keys::delayed_parts(&k))
                    .map(|(_, id)| id)
            })
            .collect()
    }

    /// Remove the document files no job names: left by a process that died between writing
    /// them and committing the jobs (files.rs). Files this process wrote are left alone.
    fn sweep_document_files(&self) -> Result<()> {
        let _alone = self.doc_writes.write().unwrap_or_else(|e| e.into_inner());
        // Uploads (schema 9) keep their text in the same directory.
        let mut named: std::collections::HashSet<String> =
            self.upload_file_names()?.into_iter().collect();
        for kv in self.tree(t::DOCUMENT_FILES).iter() {
            let (k, v) = kv?;
            match codec::decode::<DocFile>(&v) {
                Ok(doc) => {
                    named.insert(doc.name);
                }
                Err(e) => {
                    // Its file cannot be told from an orphan: keep them all.
                    tracing::warn!(key = ?k, "a document file record does not decode ({e}): no file is swept");
                    return Ok(());
                }
            }
        }
        let removed = self.files.sweep(&named);
        if removed > 0 {
            tracing::info!(files = removed, "removed document files no job names");
        }
        Ok(())
    }

    /// Whether the work under dedupe key `key` is a job already (read outside a transaction).
    fn is_job_already(&self, key: &[u8; 32]) -> bool {
        matches!(self.tree(t::DEDUPE).get(key), Ok(Some(_)))
    }

    /// Change one job and flush: the common shape of every single-job state change.
    fn change_job<T>(&self, id: JobId, f: impl Fn(&Tx, &mut Job) -> TxResult<T>) -> Result<T> {
        let out = self.transact(|tx| {
            let mut job = tx.must_job(id)?;
            f(tx, &mut job)
        })?;
        self.flush()?;
        Ok(out)
    }

    /// Claim the job under ready key `key`, unless it was taken meanwhile; flushed.
    fn claim_key(&self, key: &[u8], id: JobId, now: Millis, lease_ms: u64) -> Result<Option<Job>> {
        let done = self.checkpoint_count(id)?;
        let claimed = self.transact(|tx| {
            if tx.0[t::READY].get(key)?.is_none() {
                return Ok(None); // taken away meanwhile (cancelled): look again
            }
            let Some(mut job) = tx.job(id)? else {
                tx.0[t::READY].remove(key)?;
                return Ok(None);
            };
            if job.state != JobState::Queued {
                // A stale index entry (cannot happen with transactions, but a worker must
                // not stop over one): drop it and look again.
                tracing::warn!(job = %id, state = %job.state.kind(), "dropping a stale ready entry");
                tx.0[t::READY].remove(key)?;
                return Ok(None);
            }
            let attempt = job.attempts + 1;
            let running = JobState::Running {
                lease_until: now + lease_ms,
                attempt,
                started: now,
                chunks_done: done,
                chunks_total: 0,
            };
            let reason = if done > 0 {
                format!("claimed (attempt {attempt}), resuming after {done} finished chunks")
            } else {
                format!("claimed (attempt {attempt})")
            };
            tx.transition(&mut job, running, now, reason, None)?;
            Ok(Some(job))
        })?;
        if claimed.is_some() {
            self.flush()?;
        }
        Ok(claimed)
    }

    /// A transition a person asked for, decided in one transaction with the state it starts
    /// from: never from Running while a worker runs (`worker_runs`), whose job it is.
    fn person_moves(
        &self,
        id: JobId,
        to: StateKind,
        now: Millis,
        worker_runs: bool,
        next: impl Fn(&mut Job) -> JobState,
    ) -> Result<TransitionOutcome> {
        let outcome = self.transact(|tx| {
            let Some(mut job) = tx.job(id)? else {
                return Ok(TransitionOutcome::NotFound);
            };
            let from = job.state.kind();
            if from == to {
                return Ok(TransitionOutcome::Unchanged(from));
            }
            if !job.state.can_become(to) || (worker_runs && from == StateKind::Running) {
                return Ok(TransitionOutcome::Refused(from));
            }
            let state = next(&mut job);
            let reason = format!("{} by request", to.as_str());
            match to {
                // A retry is a fresh start: crash charges too.
                StateKind::Queued => SledStore::forget_crashes(tx, id)?,
                _ => super::crashes::job_ended(tx, id)?,
            }
            tx.transition(&mut job, state, now, reason, None)?;
            // A person's retry past the batch's deadline runs the job all the same: it would
            // expire again at once.
            if to == StateKind::Queued && job.deadline.is_some_and(|d| d <= now) {
                tx.unindex(&job)?;
                job.deadline = None;
                tx.index(&job, now)?;
                tx.put_job(&job)?;
            }
            Ok(TransitionOutcome::Done)
        })?;
        self.flush()?;
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::prelude::*;
    use crate::queue::test_support::{spec, temp_store};

    #[test]
    fn a_stale_ready_entry_is_dropped_not_fatal() {
        let (_d, store) = temp_store();
        let items: Vec<NewJob> = ["a", "b"]
            .iter()
            .map(|n| NewJob {
                spec: spec(n),
                text: format!("text {n}"),
            })
            .collect();
        store.enqueue(&items, false, 1).unwrap();
        let a = store.claim(2, 1000).unwrap().unwrap();
        // Put a stale entry for the running job back into the ready index.
        store
            .tree(t::READY)
            .insert(keys::ready(0, None, a.id), &[])
            .unwrap();
        let b = store.claim(3, 1000).unwrap().unwrap();
        assert_eq!(b.spec.custom_id, "b");
        assert!(store.claim(4, 1000).unwrap().is_none());
        assert_eq!(
            store.job(a.id).unwrap().unwrap().state.kind(),
            StateKind::Running
        );
    }

    #[test]
    fn a_custom_id_finds_only_its_own_jobs() {
        // Ids written before ids were checked may hold a NUL: "a" must not find "a\0…"'s job
        // (its key's bytes after "a\0" used to be read as a job number).
        let (_d, store) = temp_store();
        let items: Vec<NewJob> = ["a", "a\0\0\0\0\0\0\0\0\u{1}x", "ab"]
            .iter()
            .map(|n| NewJob {
                spec: spec(n),
                text: format!("text {n:?}"),
            })
            .collect();
        let out = store.enqueue(&items, false, 1).unwrap();
        let ids: Vec<JobId> = out
            .iter()
            .map(|o| match o {
                EnqueueOutcome::Queued(id) => *id,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(store.find_custom_id("a").unwrap(), vec![ids[0]]);
        assert_eq!(store.find_custom_id("ab").unwrap(), vec![ids[2]]);
        assert_eq!(
            store.find_custom_id("a\0\0\0\0\0\0\0\0\u{1}x").unwrap(),
            vec![ids[1]]
        );
        assert!(store.find_custom_id("a\0").unwrap().is_empty());
    }

    #[test]
    fn documents_split_on_character_boundaries_and_come_back_whole() {
        let (_d, store) = temp_store();
        let text = "é".repeat(DOCUMENT_PART_BYTES); // two bytes each: several parts
        let parts = split_parts(&text);
        assert!(parts.len() >= 2);
        assert!(parts.iter().all(|p| p.len() <= DOCUMENT_PART_BYTES));
        // Enqueued today, a document this large goes to a file (schema 6)…
        let out = store
            .enqueue(
                &[NewJob {
                    spec: spec("big"),
                    text: text.clone(),
                }],
                false,
                1,
            )
            .unwrap();
        let EnqueueOutcome::Queued(id) = out[0] else {
            panic!("{out:?}")
        };
        assert!(store
            .tree(t::DOCUMENT_FILES)
            .contains_key(keys::job(id))
            .unwrap());
        assert_eq!(store.keys_of_job(t::DOCUMENTS, id).unwrap().len(), 0);
        assert_eq!(store.document(id).unwrap(), text);
        assert_eq!(
            store.size_on_disk().unwrap() - store.db.size_on_disk().unwrap(),
            text.len() as u64,
            "status counts the file"
        );
        // …and one stored in parts by schema 5 reads back whole.
        let old = JobId(99);
        for (n, part) in parts.iter().enumerate() {
            store
                .tree(t::DOCUMENTS)
                .insert(keys::job_part(old, n as u32), codec::encode(part).unwrap())
                .unwrap();
        }
        assert_eq!(store.document(old).unwrap(), text);
    }
}
