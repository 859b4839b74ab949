//! `qwen3q worker`: own the store, serve the socket, drain the queue through llama.cpp.

use std::time::Duration;

use anyhow::Result;

use super::args::WorkerArgs;
use super::{code, fail, Ctx};
use qwen3q::daemon::{self, DaemonError, WorkerOptions};
use qwen3q::engine::Engine;
use qwen3q::scheduler::RunSettings;
use qwen3q::scheduler::{Exit, Signals};

#[cfg(feature = "llama")]
fn engine(ctx: &Ctx, a: &WorkerArgs) -> Result<Box<dyn Engine>> {
    use qwen3q::engine::llama::{LlamaEngine, LlamaSettings};
    Ok(Box::new(LlamaEngine::new(LlamaSettings {
        threads: a.threads.unwrap_or(ctx.config.threads),
        ..LlamaSettings::default()
    })))
}

#[cfg(not(feature = "llama"))]
fn engine(_: &Ctx, _: &WorkerArgs) -> Result<Box<dyn Engine>> {
    fail(
        code::FAILURE,
        qwen3q::engine::EngineError::Unavailable.to_string(),
    )
}

pub fn run(ctx: &Ctx, a: WorkerArgs) -> Result<i32> {
    let settings = RunSettings {
        n_ctx: a.n_ctx.unwrap_or(ctx.config.n_ctx),
        parallel: a.parallel.unwrap_or(ctx.config.parallel).max(1),
        chunk_timeout: Duration::from_secs(
            a.chunk_timeout.unwrap_or(ctx.config.chunk_timeout_secs),
        ),
        ..RunSettings::default()
    };
    let engine = engine(ctx, &a)?;
    let options = WorkerOptions {
        settings,
        drain: a.drain,
        store: ctx.store_options(),
    };
    tracing::info!(home = %ctx.home.dir.display(), pid = std::process::id(), "worker starting");
    match daemon::run(&ctx.home, engine, options, Signals::default()) {
        Ok(Exit::Shutdown) => {
            tracing::info!("worker stopped");
            Ok(0)
        }
        Ok(Exit::Drained { delayed }) => {
            if delayed > 0 {
                eprintln!(
                    "drained: nothing ready; {delayed} jobs wait for a retry or their start time"
                );
            } else {
                eprintln!("drained: nothing left to run");
            }
            Ok(0)
        }
        Err(e @ DaemonError::AlreadyRunning(_)) => fail(code::BUSY, e.to_string()),
        Err(e @ DaemonError::Store(qwen3q::queue::StoreError::Locked(_))) => {
            fail(code::BUSY, e.to_string())
        }
        Err(e) => fail(code::FAILURE, e.to_string()),
    }
}
