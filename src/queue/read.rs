//! Queries. None of them scans every job unless asked to list every job.

use std::collections::BTreeMap;

use super::trees::{meta, t};
use super::write::custom_id_key;
use super::{codec, keys, Result, Store};
use crate::job::{ChunkOutput, Event, Job, JobId, JobResult, Millis, StateKind};

/// Jobs per state.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub queued: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub dead: u64,
    pub cancelled: u64,
}

impl Counts {
    pub fn get(&self, kind: StateKind) -> u64 {
        match kind {
            StateKind::Queued => self.queued,
            StateKind::Running => self.running,
            StateKind::Succeeded => self.succeeded,
            StateKind::Failed => self.failed,
            StateKind::Dead => self.dead,
            StateKind::Cancelled => self.cancelled,
        }
    }

    fn slot(&mut self, kind: StateKind) -> &mut u64 {
        match kind {
            StateKind::Queued => &mut self.queued,
            StateKind::Running => &mut self.running,
            StateKind::Succeeded => &mut self.succeeded,
            StateKind::Failed => &mut self.failed,
            StateKind::Dead => &mut self.dead,
            StateKind::Cancelled => &mut self.cancelled,
        }
    }

    pub fn total(&self) -> u64 {
        StateKind::ALL.iter().map(|k| self.get(*k)).sum()
    }
}

/// Which jobs `list` returns.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct JobFilter {
    pub states: Vec<StateKind>,
    /// Only jobs changed at or after this time.
    pub since: Option<Millis>,
    /// A glob over custom ids (`*`, `?`, `[...]`).
    pub custom_id_glob: Option<String>,
    /// At most this many, oldest first (`None`: all).
    pub limit: Option<usize>,
    /// Only jobs after this one (by id): the next page after a page that ended with it.
    #[serde(default)]
    pub after: Option<JobId>,
}

impl Store {
    /// Job `id`; one whose stored value is damaged comes back as its quarantined dead
    /// stand-in (see `quarantine.rs`).
    pub fn job(&self, id: JobId) -> Result<Option<Job>> {
        match self.tree(t::JOBS).get(keys::job(id))? {
            Some(v) => Ok(Some(self.decode_job(id, &v)?)),
            None => Ok(None),
        }
    }

    /// Jobs whose custom id is exactly `custom_id`, oldest first.
    pub fn find_custom_id(&self, custom_id: &str) -> Result<Vec<JobId>> {
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

    pub fn ids_in_state(&self, kind: StateKind) -> Result<Vec<JobId>> {
        self.tree(t::BY_STATE)
            .scan_prefix(keys::by_state_prefix(kind))
            .keys()
            .map(|k| Ok(keys::job_from(&k?[1..]).expect("by_state keys are 9 bytes")))
            .collect()
    }

    pub fn counts(&self) -> Result<Counts> {
        let mut counts = Counts::default();
        for k in self.tree(t::BY_STATE).iter().keys() {
            if let Some(kind) = StateKind::from_byte(k?[0]) {
                *counts.slot(kind) += 1;
            }
        }
        Ok(counts)
    }

    /// Jobs matching the filter, in id (enqueue) order.
    pub fn list(&self, filter: &JobFilter) -> Result<Vec<Job>> {
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
        if filter.states.is_empty() {
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

    /// The document as enqueued.
    pub fn document(&self, id: JobId) -> Result<String> {
        let mut text = String::new();
        for v in self.tree(t::DOCUMENTS).scan_prefix(keys::job(id)).values() {
            text.push_str(&codec::decode::<String>(&v?)?);
        }
        Ok(text)
    }

    /// Finished chunks of a job that has not succeeded yet, by chunk number.
    pub fn checkpoints(&self, id: JobId) -> Result<BTreeMap<u32, ChunkOutput>> {
        let mut out = BTreeMap::new();
        for kv in self.tree(t::CHECKPOINTS).scan_prefix(keys::job(id)) {
            let (k, v) = kv?;
            if let Some((_, chunk)) = keys::job_part_parts(&k) {
                out.insert(chunk, codec::decode(&v)?);
            }
        }
        Ok(out)
    }

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

    /// Job `id`'s result. A damaged one is reported in the log and read as none: one value
    /// must not stop `results` for every job.
    pub fn result(&self, id: JobId) -> Result<Option<JobResult>> {
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

    /// Job `id`'s events; a damaged one is skipped (and logged).
    pub fn events(&self, id: JobId) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        for v in self.tree(t::EVENTS).scan_prefix(keys::job(id)).values() {
            match codec::decode(&v?) {
                Ok(e) => out.push(e),
                Err(e) => tracing::error!(job = %id, "stored event damaged, skipped: {e}"),
            }
        }
        Ok(out)
    }

    pub fn paused(&self) -> Result<bool> {
        match self.tree(t::META).get(meta::PAUSED)? {
            Some(v) => Ok(codec::decode(&v)?),
            None => Ok(false),
        }
    }

    /// When the earliest delayed job (backoff or not-before) comes due.
    pub fn next_due(&self) -> Result<Option<Millis>> {
        Ok(self
            .tree(t::DELAYED)
            .first()?
            .and_then(|(k, _)| keys::delayed_parts(&k))
            .map(|(due, _)| due))
    }

    /// Jobs due before `until` whose last event says they wait for memory (deferred by the
    /// admission gate, of this worker or one before it).
    pub fn memory_deferred(&self, until: Millis) -> Result<Vec<JobId>> {
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

    /// Jobs waiting for a time: retries after backoff, and not-before times.
    pub fn delayed_count(&self) -> Result<usize> {
        Ok(self.tree(t::DELAYED).len())
    }
}
