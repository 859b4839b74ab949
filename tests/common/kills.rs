//! `kill -9` at random moments, each followed by a restart: during drains, during bulk
//! enqueues, during migrations of a large store written by the previous schema. After each
//! kind, what must hold is checked: no job lost or in twice, no result duplicated, no chunk
//! recorded twice, no job charged a crash (an outside kill is never the job's fault).
//!
//! Shared by the integration tests (a short run of each, in CI) and `examples/kill_loop.rs`
//! (the full hundred, figures in RELIABILITY.md). Panics name what broke.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{count, poll, prose, s, sigterm, wait_exit, wait_until, Rng, TestHome};

/// (job id, chunk) → how many times the chunk was recorded as finished, from every job's
/// history (`show --json` of jobs 1..=jobs).
pub fn chunk_runs(h: &TestHome, jobs: u64) -> HashMap<(u64, u64), usize> {
    let ids: Vec<String> = (1..=jobs).map(|i| i.to_string()).collect();
    let mut args: Vec<&str> = vec!["show", "--json"];
    args.extend(ids.iter().map(String::as_str));
    let shown: Value = serde_json::from_str(&h.ok(&args)).unwrap();
    let mut runs = HashMap::new();
    for job in shown.as_array().unwrap() {
        let id = job["id"].as_u64().unwrap();
        for e in job["events"].as_array().unwrap() {
            if let Some(chunk) = e["chunk"].as_u64() {
                *runs.entry((id, chunk)).or_default() += 1;
            }
        }
    }
    runs
}

pub fn chunks_done(h: &TestHome, jobs: u64) -> usize {
    chunk_runs(h, jobs).values().sum()
}

/// How many times a job's history entered `state`.
pub fn events_to(shown: &Value, state: &str) -> usize {
    shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["to"] == state)
        .count()
}

/// Kills of a worker draining real documents.
pub struct Drains<'a> {
    pub model: &'a Path,
    /// Documents of one chunk, and of several (1,800 words: three chunks or more at the
    /// contexts used).
    pub short_docs: usize,
    pub long_docs: usize,
    pub max_tokens: &'a str,
    /// `worker` flags: the context, the batch size.
    pub worker_args: &'a [&'a str],
    pub kills: usize,
    /// After the worker answers: wait for 0 to `more_chunks - 1` more finished chunks
    /// (drawn), then this many milliseconds (drawn between the two) into the next.
    pub more_chunks: u64,
    pub pause_ms: (u64, u64),
}

impl Drains<'_> {
    /// Put a set of documents in (set `n`: files `n/shortNNN.txt`, `n/longNNN.txt`), each
    /// text its own (`prose` repeats every 16 seeds: the set and number open each text).
    fn enqueue_set(&self, h: &TestHome, n: usize) {
        for i in 0..self.short_docs {
            let text = format!("Set {n}, note {i}. {}", prose(i, 40 + 30 * (i % 10)));
            h.doc(&format!("{n}/short{i:03}.txt"), &text);
        }
        for i in 0..self.long_docs {
            let text = format!("Set {n}, report {i}. {}", prose(500 + i, 1800));
            h.doc(&format!("{n}/long{i:03}.txt"), &text);
        }
        h.enqueue_on(
            &h.path().join(format!("docs/{n}")),
            self.model,
            self.max_tokens,
        );
    }

    /// Enqueue, kill `kills` times (each time while work is left: another set of documents
    /// goes in when the last is done), drain to the end, check. Returns a line of figures.
    pub fn run(&self, h: &TestHome, rng: &mut Rng) -> String {
        let per_set = (self.short_docs + self.long_docs) as u64;
        let mut sets = 1;
        self.enqueue_set(h, 0);
        let every = Duration::from_millis(100);

        let started = Instant::now();
        let mut at_kill = Vec::new();
        for _ in 0..self.kills {
            if count(&h.status(), "succeeded") == per_set * sets as u64 {
                self.enqueue_set(h, sets);
                sets += 1;
            }
            let jobs = per_set * sets as u64;
            let before = chunks_done(h, jobs);
            let mut worker = h.spawn_worker(self.worker_args);
            h.wait_for_worker(&mut worker);
            let more = rng.range(0, self.more_chunks) as usize;
            poll(Duration::from_secs(600), every, "chunks finish", || {
                chunks_done(h, jobs) >= before + more || count(&h.status(), "succeeded") == jobs
            });
            std::thread::sleep(Duration::from_millis(
                rng.range(self.pause_ms.0, self.pause_ms.1),
            ));
            assert!(
                worker.try_wait().unwrap().is_none(),
                "the worker exited by itself"
            );
            worker.kill().unwrap(); // SIGKILL
            worker.wait().unwrap();
            // With no worker, the CLI opens the store itself (the socket left is stale).
            let status = h.status();
            assert!(status["worker"].is_null());
            at_kill.push((count(&status, "succeeded"), chunks_done(h, jobs)));
        }
        let jobs = per_set * sets as u64;
        let idle = at_kill.iter().filter(|(done, _)| *done == jobs).count();
        eprintln!("(jobs finished, chunks finished) at each kill: {at_kill:?}");
        assert!(
            at_kill.last().unwrap().1 > at_kill[0].1,
            "work went on across kills: {at_kill:?}"
        );
        assert!(
            idle * 2 <= self.kills,
            "most kills came while work was left: {at_kill:?}"
        );
        let killed_for = started.elapsed();

        let mut args = vec!["worker", "--drain"];
        args.extend_from_slice(self.worker_args);
        h.ok(&args);
        let status = h.status();
        assert_eq!(count(&status, "succeeded"), jobs, "{status}");
        let results = h.results(&[]);
        assert_eq!(results.len(), jobs as usize, "no result lost or duplicated");
        let ids: BTreeSet<u64> = results.iter().map(|r| r["id"].as_u64().unwrap()).collect();
        assert_eq!(ids.len(), jobs as usize, "one result per job");
        for id in 1..=jobs {
            let shown = h.show(&id.to_string());
            assert_eq!(events_to(&shown, "succeeded"), 1, "job {id} succeeded once");
            assert_eq!(shown["attempts"], 1, "a kill uses up no attempt: {shown}");
            assert!(
                shown["crashes"].is_null(),
                "a kill is charged to no job: {shown}"
            );
        }
        let runs = chunk_runs(h, jobs);
        let repeated: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            repeated.is_empty(),
            "finished chunks ran again: {repeated:?}"
        );
        let long_chunks = runs
            .keys()
            .filter(|(id, _)| {
                results
                    .iter()
                    .any(|r| r["id"] == *id && r["custom_id"].as_str().unwrap().starts_with("long"))
            })
            .count();
        assert!(
            long_chunks >= self.long_docs * sets * 3,
            "the long documents were chunked: {long_chunks} chunks"
        );
        format!(
            "drains: {} kills ({idle} after the work was done) over {:.0} s, {jobs} jobs, {} \
             chunks: 0 lost, 0 duplicated, 0 chunks twice, 0 charged",
            self.kills,
            killed_for.as_secs_f64(),
            runs.len()
        )
    }
}

/// `docs` small documents (`dNNNN.txt`, each its own text) in a directory of `h`'s, for the
/// enqueue kills; the directory.
pub fn enqueue_documents(h: &TestHome, docs: usize) -> std::path::PathBuf {
    for i in 0..docs {
        let words = if is_large(i) { 12_000 } else { 12 };
        h.doc(
            &format!("e/d{i:04}.txt"),
            &format!("document {i}: {}", prose(i, words)),
        );
    }
    h.path().join("docs/e")
}

/// One document in a hundred is larger than a stored part (about 80 KiB): its text goes to a
/// file beside the store, written before the transaction that names it.
fn is_large(i: usize) -> bool {
    i % 100 == 7
}

/// Once every document is a job, exactly one file per large document — after a worker's start,
/// which removes the files a killed command wrote but never committed (none is lost).
fn one_file_per_large_document(h: &TestHome, docs: usize, worker: Option<&super::SpawnedWorker>) {
    let large = (0..docs).filter(|&i| is_large(i)).count();
    if worker.is_some() {
        // The command was killed, not the worker that writes: nothing is orphaned (once the
        // killed command's last request, perhaps still being handled, is done).
        wait_until(
            Duration::from_secs(30),
            "one file per large document",
            || h.document_files().len() == large,
        );
        return;
    }
    assert!(h.document_files().len() >= large);
    let mut w = h.spawn_worker(&["--n-ctx", "256"]);
    h.wait_for_worker(&mut w);
    h.ok(&["pause"]);
    wait_until(
        Duration::from_secs(30),
        "one file per large document after the worker's sweep",
        || h.document_files().len() == large,
    );
    sigterm(&w);
    wait_exit(&mut w, Duration::from_secs(30)).expect("the worker stops");
}

/// Every job `list --json` shows, each custom id once (panics on an id listed twice).
fn listed_once(h: &TestHome) -> Vec<Value> {
    let listed: Value = serde_json::from_str(&h.ok(&["list", "--json"])).unwrap();
    let listed = listed.as_array().unwrap().clone();
    let ids: BTreeSet<&str> = listed
        .iter()
        .map(|j| j["custom_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), listed.len(), "no job in twice");
    listed
}

/// A home for one enqueue, with a paused worker when the enqueue goes through one.
fn enqueue_home(bin: &Path, through_worker: bool) -> (TestHome, Option<super::SpawnedWorker>) {
    let h = TestHome::with_bin(bin.to_path_buf());
    let worker = through_worker.then(|| {
        let mut w = h.spawn_worker(&["--n-ctx", "256"]);
        h.wait_for_worker(&mut w);
        h.ok(&["pause"]);
        w
    });
    (h, worker)
}

fn stop(worker: Option<super::SpawnedWorker>) {
    if let Some(mut w) = worker {
        assert!(w.try_wait().unwrap().is_none(), "the worker lives");
        sigterm(&w);
        wait_exit(&mut w, Duration::from_secs(30)).expect("the worker stops");
    }
}

/// `kill -9` an enqueue of `dir` (`docs` files) on `model` at a random moment, each time
/// into a new store (without a worker, or through one), at least `kills` times and until half
/// of them land in the middle. After each: the store opens with each document in once or not
/// at all, and the same enqueue again leaves exactly one job per document. Returns a line of
/// figures.
pub fn enqueues(
    bin: &Path,
    dir: &Path,
    model: &Path,
    docs: usize,
    kills: usize,
    through_worker: bool,
    rng: &mut Rng,
) -> String {
    // How long the whole enqueue takes here, to draw the moments from: a release build on a
    // fast disk is done in a fraction of a second, a debug build on a loaded machine takes
    // seconds. The median of three: the first one may wait on a disk still flushing what
    // came before (the document files' sync covers the whole file system).
    let whole = {
        let mut runs: Vec<u64> = (0..3)
            .map(|_| {
                let (h, worker) = enqueue_home(bin, through_worker);
                let started = Instant::now();
                h.ok(&["enqueue", s(dir), "--model", s(model)]);
                let took = started.elapsed().as_millis() as u64;
                stop(worker);
                took
            })
            .collect();
        runs.sort_unstable();
        eprintln!("whole enqueues: {runs:?} ms");
        runs[1]
    };
    let span = (whole * 5 / 4).max(20);
    let mut partial = Vec::new();
    let midway = |p: &[usize]| p.iter().filter(|&&n| n > 0 && n < docs).count();
    while partial.len() < kills || midway(&partial) < kills.div_ceil(2) {
        assert!(
            partial.len() < kills * 4 + 20,
            "too few kills came midway: {partial:?}"
        );
        let (h, worker) = enqueue_home(bin, through_worker);
        let mut child = h
            .command(&["enqueue", s(dir), "--model", s(model)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.range(0, span)));
        let _ = child.kill();
        child.wait().unwrap();
        // The store opens (through the worker, or directly), each document in once or not at
        // all; running the enqueue again adds the rest.
        partial.push(listed_once(&h).len());
        let out = h.ok(&["enqueue", s(dir), "--model", s(model), "--json"]);
        let outcomes: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(outcomes.as_array().unwrap().len(), docs);
        assert_eq!(listed_once(&h).len(), docs, "one job per document");
        one_file_per_large_document(&h, docs, worker.as_ref());
        stop(worker);
    }
    eprintln!("jobs in each store after its kill (a whole enqueue: {whole} ms): {partial:?}");
    format!(
        "enqueues {}: {} kills ({} midway; a whole enqueue of {docs} documents {whole} ms): \
         each document in once or not at all, once after the enqueue ran again",
        if through_worker {
            "through a worker"
        } else {
            "without a worker"
        },
        partial.len(),
        midway(&partial)
    )
}

/// Where a killed `status` stood in the migration, from its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moment {
    Before,
    Midway,
    After,
}

/// `qwen3q -v status` on a store that may need migrating, killed after `ms` (or not at all).
fn open_killed_after(h: &TestHome, ms: Option<u64>) -> (Moment, Duration) {
    let started = Instant::now();
    let mut child = h
        .command(&["-v", "status"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(ms) = ms {
        std::thread::sleep(Duration::from_millis(ms));
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let took = started.elapsed();
    let log = String::from_utf8_lossy(&out.stderr);
    let moment = if log.contains("migrated the store") {
        Moment::After
    } else if log.contains("migrating the store") {
        Moment::Midway
    } else {
        Moment::Before
    };
    if ms.is_none() {
        assert!(out.status.success(), "the store opens: {log}");
    }
    (moment, took)
}

/// The large schema-4 fixture (`tests/fixtures/store-v4-large.tar.gz`, see its README) as
/// it must read after any migration: 1,500 documents `dNNNN.txt` and 1,500 chat requests
/// `q-NNNN` (priority 1, system and user turns), all queued, each once.
pub fn check_large_v4_store(h: &TestHome) {
    let status = h.status();
    assert_eq!(count(&status, "queued"), 3000, "{status}");
    let listed = listed_once(h);
    let ids: BTreeSet<&str> = listed
        .iter()
        .map(|j| j["custom_id"].as_str().unwrap())
        .collect();
    let want: BTreeSet<String> = (0..1500)
        .map(|i| format!("d{i:04}.txt"))
        .chain((0..1500).map(|i| format!("q-{i:04}")))
        .collect();
    assert_eq!(listed.len(), 3000, "no job lost or in twice");
    assert!(
        ids.iter().copied().eq(want.iter().map(String::as_str)),
        "the fixture's ids, each once"
    );
    for job in &listed {
        let task = &job["task"];
        if job["custom_id"].as_str().unwrap().starts_with("q-") {
            let turns = task["turns"].as_array().expect("a chat's turns");
            let roles: Vec<&str> = turns.iter().map(|t| t["role"].as_str().unwrap()).collect();
            assert_eq!(roles, ["system", "user"], "{job}");
            assert_eq!(turns[0]["bytes"], 9, "\"Be brief.\"");
        } else {
            assert_eq!(task["name"], "summarize", "{job}");
        }
    }
}

/// Kill migrations of the store in `tar` (which `check` describes) at random moments until
/// `kills` kills, at least half of them midway, each followed by a restart; every store opens
/// and checks after its kills. Returns a line of figures.
pub fn migrations(
    h: &TestHome,
    tar: &Path,
    kills: usize,
    rng: &mut Rng,
    check: fn(&TestHome),
) -> String {
    // How long a whole migration takes here, to draw the moments from.
    h.unpack_store(tar);
    let (moment, whole) = open_killed_after(h, None);
    assert_eq!(moment, Moment::After, "the fixture needs migrating");
    check(h);
    let span = (whole.as_millis() as u64 * 5 / 4).max(50);
    let (mut done, mut midway, mut stores) = (0, 0, 0);
    while done < kills || midway < kills.div_ceil(2) {
        assert!(
            done < kills * 4 + 20,
            "{midway} of {done} kills came midway"
        );
        h.unpack_store(tar);
        stores += 1;
        // Up to three kills of one store in a row (a migration cut short, restarted, cut
        // short again), then it runs to the end.
        for _ in 0..3 {
            let (moment, _) = open_killed_after(h, Some(rng.range(0, span)));
            done += 1;
            midway += usize::from(moment == Moment::Midway);
            if moment == Moment::After {
                break;
            }
        }
        open_killed_after(h, None);
        check(h);
    }
    format!(
        "migrations: {done} kills ({midway} midway) of {stores} stores, a whole migration \
         {:.1} s: every store opens, 0 jobs lost or in twice",
        whole.as_secs_f64()
    )
}

/// After [`migrations`] of the large fixture: the upgraded store runs. Its chat requests go
/// first (priority 1): three of them succeed, from their stored conversations.
pub fn a_migrated_store_runs(h: &TestHome) {
    let mut worker = h.spawn_worker(&["--n-ctx", "256", "--parallel", "2", "--threads", "1"]);
    h.wait_for_worker(&mut worker);
    let deadline = Instant::now() + Duration::from_secs(300);
    while count(&h.status(), "succeeded") < 3 {
        assert!(
            Instant::now() < deadline,
            "three jobs did not succeed in 300 s; the worker said:\n{}\nstatus: {}",
            worker.log(),
            h.status()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    sigterm(&worker);
    wait_exit(&mut worker, Duration::from_secs(30)).expect("the worker stops");
    let done: Vec<Value> = h
        .results(&[])
        .into_iter()
        .filter(|r| r["state"] == "succeeded")
        .collect();
    assert!(done.len() >= 3);
    for r in done {
        assert!(r["custom_id"].as_str().unwrap().starts_with("q-"), "{r}");
        assert!(r["answer"].is_string(), "{r}");
    }
}
