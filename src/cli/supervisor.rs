//! `qwen3q worker` as the supervisor of the runner that does the work (see
//! `crate::supervise`): start it, pass stop signals on, and when it dies by a signal, charge
//! a crash to the jobs it had in flight (a death it inflicted on itself) or nobody (a kill from
//! outside), then start it again.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::inference::BUILD_ENV;
use super::{code, fail, Ctx};
use crate::crash::{self_inflicted, Verdict};
use crate::supervise::{self, signal_name, ChatWitness, Death};

/// A runner that lived less than this before dying is restarted after a growing pause (1 s,
/// 2 s, … a minute), so that a runner dying at start cannot spin.
const SHORT_LIFE: Duration = Duration::from_secs(10);

pub fn run(ctx: &Ctx) -> Result<i32> {
    // The runner decodes: it is `qwen3q-engine`, told this build (see `super::inference`).
    let program = super::inference::program(ctx.inference)?;
    supervise::pass_signals_on();
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let mut pause = Duration::ZERO;
    // After a runner that died by a signal soon after its start, the next starts cold: if the
    // model it loaded at start is what killed it, it must not kill every restart.
    let mut cold = false;
    loop {
        let started = Instant::now();
        // A witness left by a runner that ended another way (a store error) tells nothing.
        ChatWitness::take(&ctx.home.chats_decoding());
        let mut env = vec![(BUILD_ENV, crate::BUILD)];
        if cold {
            env.push((crate::daemon::warm::COLD_START_ENV, "1"));
        }
        let (pid, death) = supervise::run_once(&program, &args, &env).or_else(|e| {
            fail(
                code::FAILURE,
                format!("cannot start the worker's runner: {e}"),
            )
        })?;
        let sig = match death {
            Death::Exited(code) => return Ok(code),
            Death::Signal(sig) => sig,
        };
        cold = started.elapsed() < SHORT_LIFE;
        let name = signal_name(sig);
        // A crash with jobs in flight is progress (their charges lead to an end): start again
        // at once. A crash with none, soon after the start, may repeat at every start: pause.
        let busy = match self_inflicted(sig) {
            Some(signal) => charge(ctx, pid, signal)?,
            None => {
                tracing::warn!(
                    pid,
                    "the worker's runner was killed by {name} from outside: nothing is charged; \
                     its jobs resume"
                );
                true
            }
        };
        if supervise::stopping() {
            return Ok(128 + sig);
        }
        pause = if !busy && started.elapsed() < SHORT_LIFE {
            (pause * 2).clamp(Duration::from_secs(1), Duration::from_secs(60))
        } else {
            Duration::ZERO
        };
        tracing::info!(
            pause_ms = pause.as_millis() as u64,
            "starting the runner again"
        );
        let until = Instant::now() + pause;
        while Instant::now() < until && !supervise::stopping() {
            std::thread::sleep(Duration::from_millis(100));
        }
        if supervise::stopping() {
            return Ok(0);
        }
    }
}

/// The runner crashed by `signal`: record it against the jobs it had in flight (the store is
/// free now that the runner is dead; its lock may linger a moment). Whether any was.
fn charge(ctx: &Ctx, pid: u32, signal: &str) -> Result<bool> {
    let opts = crate::queue::OpenOptions {
        lock_wait: Duration::from_secs(10),
        ..ctx.store_options()
    };
    let store = match crate::queue::open(&ctx.home.store(), &opts) {
        Ok(store) => store,
        Err(e) => return fail(code::FAILURE, format!("recording a crash: {e}")),
    };
    // Chats decoding beside the jobs: none of them was alone.
    let chats = ChatWitness::take(&ctx.home.chats_decoding());
    let verdicts = store.record_crash(chats, signal, crate::now_ms(), ctx.config.max_crashes)?;
    if verdicts.is_empty() {
        tracing::error!(
            pid,
            chats,
            "the worker's runner crashed ({signal}) with no job in flight"
        );
    }
    for (id, verdict) in &verdicts {
        match verdict {
            Verdict::Suspect { .. } => tracing::error!(
                pid, job = %id, chats,
                "the worker's runner crashed ({signal}) with {} jobs in flight: a suspect, to run alone",
                verdicts.len()
            ),
            Verdict::Charged { record } => tracing::error!(
                pid, job = %id,
                "the worker's runner crashed ({signal}) running this job alone: crash {} charged",
                record.charged
            ),
            Verdict::Dead { error, .. } => tracing::error!(pid, job = %id, "dead: {error}"),
        }
    }
    Ok(!verdicts.is_empty())
}
