//! Queries. None of them scans every job unless asked to list every job.

use std::collections::BTreeMap;

use super::files::DocFile;
use super::trees::{meta, t};
use super::write::custom_id_key;
use super::{codec, keys, Result, SledStore};
use crate::job::{ChunkOutput, Event, Job, JobId, JobResult, Millis, StateKind};
use crate::queue::StoreError;
use crate::queue::{Counts, JobFilter, JobReads};

impl SledStore {
    /// The jobs in each state, counted from the `by_state` index: what the maintained totals
    /// of [`JobReads::counts`] must equal. Scans every job; the schema-7 migration and tests.
    pub(super) fn scan_counts(&self) -> Result<Counts> {
        let mut counts = Counts::default();
        for k in self.tree(t::BY_STATE).iter().keys() {
            if let Some(kind) = StateKind::from_byte(k?[0]) {
                *counts.slot(kind) += 1;
            }
        }
        Ok(counts)
    }
}

impl JobReads for SledStore {
    fn job(&self, id: JobId) -> Result<Option<Job>> {
        match self.tree(t::JOBS).get(keys::job(id))? {
            Some(v) => Ok(Some(self.decode_job(id, &v)?)),
            None => Ok(None),
        }
    }

    fn find_custom_id(&self, custom_id: &str) -> Result<Vec<JobId>> {
        let mut prefix = custom_id.as_bytes().to_vec();
        prefix.push(0);
        let mut ids = Vec::new();
        for k in self.tree(t::CUSTOM_IDS).scan_prefix(&prefix).keys() {
            let k = k?;
            // Exactly this id and a job number: a longer id that starts with this one (and a
            // NUL, in a store written before ids were checked) is another job's.
            if k.len() != prefix.len() + 8 {
                continue;
            }
            if let Some(id) = keys::job_from(&k[prefix.len()..]) {
                debug_assert_eq!(&k[..], &custom_id_key(custom_id, id)[..]);
                ids.push(id);
            }
        }
        Ok(ids)
    }

    fn ids_in_state(&self, kind: StateKind) -> Result<Vec<JobId>> {
        self.tree(t::BY_STATE)
            .scan_prefix(keys::by_state_prefix(kind))
            .keys()
            .map(|k| Ok(keys::job_from(&k?[1..]).expect("by_state keys are 9 bytes")))
            .collect()
    }

    /// From the maintained totals (schema 7): six reads, whatever the store holds. A damaged
    /// total reads as 0 (a figure for `status`; the schema-7 migration counts afresh).
    fn counts(&self) -> Result<Counts> {
        let mut counts = Counts::default();
        let meta = self.tree(t::META);
        for kind in StateKind::ALL {
            if let Some(v) = meta.get(meta::jobs_in(kind))? {
                *counts.slot(kind) = codec::decode::<u64>(&v).unwrap_or(0);
            }
        }
        Ok(counts)
    }

    fn list(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        let glob = match &filter.custom_id_glob {
            Some(g) => Some(
                globset::Glob::new(g)
                    .map_err(|e| super::StoreError::Io(format!("bad glob {g:?}: {e}")))?
                    .compile_matcher(),
            ),
            None => None,
        };
        let keep = |job: &Job| {
            filter.since.is_none_or(|s| job.updated >= s)
                && glob
                    .as_ref()
                    .is_none_or(|g| g.is_match(&job.spec.custom_id))
        };
        let mut jobs = Vec::new();
        let limit = filter.limit.unwrap_or(usize::MAX);
        if let Some(b) = filter.batch {
            let in_state =
                |job: &Job| filter.states.is_empty() || filter.states.contains(&job.state.kind());
            // Read as the page fills: a page of a large batch reads its page, not the batch.
            for id in self.batch_job_ids(b, filter.after) {
                if let Some(job) = self.job(id?)? {
                    if in_state(&job) && keep(&job) {
                        jobs.push(job);
                        if jobs.len() >= limit {
                            break;
                        }
                    }
                }
            }
        } else if filter.states.is_empty() {
            let start = filter.after.map_or(0, |a| a.0.saturating_add(1));
            for kv in self.tree(t::JOBS).range(keys::job(JobId(start))..) {
                let (k, v) = kv?;
                let Some(id) = keys::job_from(&k) else {
                    continue;
                };
                let job = self.decode_job(id, &v)?;
                if keep(&job) {
                    jobs.push(job);
                    if jobs.len() >= limit {
                        break;
                    }
                }
            }
        } else {
            let mut ids: Vec<JobId> = Vec::new();
            for kind in &filter.states {
                ids.extend(self.ids_in_state(*kind)?);
            }
            ids.sort();
            ids.retain(|id| filter.after.is_none_or(|a| *id > a));
            for id in ids {
                if let Some(job) = self.job(id)? {
                    if keep(&job) {
                        jobs.push(job);
                        if jobs.len() >= limit {
                            break;
                        }
                    }
                }
            }
        }
        Ok(jobs)
    }

    fn document(&self, id: JobId) -> Result<String> {
        let damaged = |reason: String| StoreError::DamagedDocument { id, reason };
        if let Some(v) = self.tree(t::DOCUMENT_FILES).get(keys::job(id))? {
            let doc: DocFile = codec::decode(&v).map_err(|e| damaged(e.to_string()))?;
            return self.files.read(&doc).map_err(|e| {
                if e.is_permanent() {
                    damaged(e.to_string())
                } else {
                    StoreError::UnreadableDocument {
                        id,
                        reason: e.to_string(),
                    }
                }
            });
        }
        let mut text = String::new();
        for v in self.tree(t::DOCUMENTS).scan_prefix(keys::job(id)).values() {
            let part: String = codec::decode(&v?).map_err(|e| damaged(e.to_string()))?;
            text.push_str(&part);
        }
        Ok(text)
    }

    fn checkpoints(&self, id: JobId) -> Result<BTreeMap<u32, ChunkOutput>> {
        let mut out = BTreeMap::new();
        for kv in self.tree(t::CHECKPOINTS).scan_prefix(keys::job(id)) {
            let (k, v) = kv?;
            if let Some((_, chunk)) = keys::job_part_parts(&k) {
                out.insert(chunk, codec::decode(&v)?);
            }
        }
        Ok(out)
    }

    fn result(&self, id: JobId) -> Result<Option<JobResult>> {
        match self.tree(t::RESULTS).get(keys::job(id))? {
            Some(v) => match codec::decode(&v) {
                Ok(r) => Ok(Some(r)),
                Err(e) => {
                    tracing::error!(job = %id, "stored result damaged, skipped: {e}");
                    Ok(None)
                }
            },
            None => Ok(None),
        }
    }

    fn events(&self, id: JobId) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        for v in self.tree(t::EVENTS).scan_prefix(keys::job(id)).values() {
            match codec::decode(&v?) {
                Ok(e) => out.push(e),
                Err(e) => tracing::error!(job = %id, "stored event damaged, skipped: {e}"),
            }
        }
        Ok(out)
    }

    fn paused(&self) -> Result<bool> {
        match self.tree(t::META).get(meta::PAUSED)? {
            Some(v) => Ok(codec::decode(&v)?),
            None => Ok(false),
        }
    }

    fn ahead_of(&self, id: JobId) -> Result<Option<u64>> {
        let Some(job) = self.job(id)? else {
            return Ok(None);
        };
        let key = keys::ready(job.spec.priority, job.deadline, id);
        if job.state != crate::job::JobState::Queued || self.tree(t::READY).get(key)?.is_none() {
            return Ok(None);
        }
        let mut ahead = 0u64;
        for k in self.tree(t::READY).range(..key).keys() {
            k?;
            ahead += 1;
        }
        Ok(Some(ahead))
    }

    fn next_due(&self) -> Result<Option<Millis>> {
        let first = |tree: usize| -> Result<Option<Millis>> {
            Ok(self
                .tree(tree)
                .first()?
                .and_then(|(k, _)| keys::delayed_parts(&k))
                .map(|(due, _)| due))
        };
        Ok(match (first(t::DELAYED)?, first(t::DEADLINES)?) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    fn memory_deferred(&self, until: Millis) -> Result<Vec<JobId>> {
        let mut out = Vec::new();
        for k in self
            .tree(t::DELAYED)
            .range(..keys::delayed(until, JobId(u64::MAX)))
            .keys()
        {
            let Some((_, id)) = keys::delayed_parts(&k?) else {
                continue;
            };
            let last = self
                .tree(t::EVENTS)
                .scan_prefix(keys::job(id))
                .values()
                .next_back();
            let waits = match last {
                Some(v) => codec::decode::<crate::job::Event>(&v?)
                    .is_ok_and(|e| e.reason.contains("waiting for memory")),
                None => false,
            };
            if waits {
                out.push(id);
            }
        }
        Ok(out)
    }

    fn delayed_count(&self) -> Result<usize> {
        Ok(self.tree(t::DELAYED).len())
    }
}

impl SledStore {
    /// The keys of job `id`'s values in a tree keyed by job first (`documents`,
    /// `checkpoints`, `events`).
    pub(crate) fn keys_of_job(&self, tree: usize, id: JobId) -> Result<Vec<Vec<u8>>> {
        self.tree(tree)
            .scan_prefix(keys::job(id))
            .keys()
            .map(|k| Ok(k?.to_vec()))
            .collect()
    }

    pub(crate) fn checkpoint_count(&self, id: JobId) -> Result<u32> {
        let mut n = 0;
        for k in self.tree(t::CHECKPOINTS).scan_prefix(keys::job(id)).keys() {
            k?;
            n += 1;
        }
        Ok(n)
    }
}
