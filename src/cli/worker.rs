//! `qwen3q worker`: own the store, serve the socket, drain the queue through llama.cpp (the
//! supervisor runs in either binary, the runner in `qwen3q-engine`).

use std::time::Duration;

use anyhow::Result;

use super::args::WorkerArgs;
use super::inference::Inference;
use super::{code, fail, Coded, Ctx};
use crate::daemon::{self, DaemonError, WorkerOptions};
use crate::engine::{Engine, EngineSettings};
use crate::monitor::MemoryProbe;
use crate::scheduler::RunSettings;
use crate::scheduler::{Exit, Signals};

/// What may stay loaded, from the config: the byte budget (0: three quarters of physical
/// memory), the model count, the keep-alive.
fn limits(ctx: &Ctx) -> crate::engine::lru::Limits {
    let budget_bytes = if ctx.config.model_budget_mb > 0 {
        ctx.config.model_budget_mb * 1024 * 1024
    } else {
        use sysinfo::{MemoryRefreshKind, RefreshKind, System};
        let total = System::new_with_specifics(
            RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram()),
        )
        .map(|s| s.total_memory())
        .unwrap_or(0);
        if total > 0 {
            total / 4 * 3
        } else {
            u64::MAX
        }
    };
    crate::engine::lru::Limits {
        budget_bytes,
        max_models: ctx.config.max_models.max(1),
        keep_alive_ms: ctx.config.keep_alive_secs * 1000,
    }
}

/// Pinned models as paths: config names, registered names or paths.
fn pins(ctx: &Ctx) -> Vec<String> {
    ctx.config
        .pin
        .iter()
        .map(|p| {
            let path = match ctx.config.models.get(p) {
                Some(e) => e.path.clone(),
                None => ctx
                    .registered(p)
                    .map(|e| e.path)
                    .unwrap_or_else(|| p.into()),
            };
            let path = path.canonicalize().unwrap_or(path);
            path.display().to_string()
        })
        .collect()
}

/// This binary's engine (in `qwen3q`, which has none, the command runs again as
/// `qwen3q-engine`) with the config's limits, pins and kernels (`threads` and `kernels` given
/// override the config's), and the inference it came from.
pub(super) fn engine(
    ctx: &Ctx,
    threads: Option<u32>,
    kernels: Option<crate::engine::Kernels>,
) -> Result<(Box<dyn Engine>, &'static Inference)> {
    let inference = super::inference::require(ctx.inference)?;
    match (inference.engine)(EngineSettings {
        threads: threads.unwrap_or(ctx.config.threads),
        limits: limits(ctx),
        pins: pins(ctx),
        kernels: kernels.unwrap_or(ctx.config.kernels),
        ..EngineSettings::default()
    }) {
        Ok(engine) => Ok((engine, inference)),
        Err(e) => fail(code::FAILURE, e.to_string()),
    }
}

/// The schedule window, from the flags or else the config; both halves or neither.
fn window(ctx: &Ctx, a: &WorkerArgs) -> Result<Option<crate::schedule::Window>> {
    let (pattern, until) = match (&a.window, &a.until) {
        (Some(w), Some(u)) => (w.clone(), u.clone()),
        _ => match (&ctx.config.window, &ctx.config.until) {
            (Some(w), Some(u)) => (w.clone(), u.clone()),
            (None, None) => return Ok(None),
            _ => return fail(code::BAD_INPUT, "the config needs both window and until"),
        },
    };
    match crate::schedule::Window::parse(&pattern, &until) {
        Ok(w) => Ok(Some(w)),
        Err(e) => fail(code::BAD_INPUT, e),
    }
}

/// `qwen3q worker`: the supervisor, which starts this command again as the runner.
pub fn run(ctx: &Ctx, a: WorkerArgs) -> Result<i32> {
    match crate::supervise::supervisor_pid() {
        Some(parent) => {
            crate::supervise::become_runner(parent);
            run_runner(ctx, a)
        }
        None => super::supervisor::run(ctx),
    }
}

/// `--http ADDR` (or the config's `http`): the address, the key (made now if there is none)
/// and how a request's model name becomes a job's model.
fn http_settings(ctx: &Ctx, flag: Option<&str>) -> Result<Option<crate::http::ApiSettings>> {
    let Some(addr) = flag.or(ctx.config.http.as_deref()) else {
        return Ok(None);
    };
    let addr: std::net::SocketAddr = addr.parse().map_err(|_| {
        Coded(
            code::USAGE,
            format!("--http {addr:?}: an address and a port, e.g. 127.0.0.1:11400"),
        )
    })?;
    let key_path = ctx.home.api_key();
    let key = crate::http::ApiKey::load_or_create(&key_path)
        .map_err(|e| Coded(code::FAILURE, format!("{}: {e}", key_path.display())))?;
    let config = ctx.config.clone();
    let config_path = ctx.home.config();
    let checked = ctx.home.validated_models();
    let resolve_model = move |store: &dyn crate::queue::Queue, name: Option<&str>| {
        if let Some(n) = name.filter(|n| n.contains('/') || n.ends_with(".gguf")) {
            return Err(format!(
                "model {n:?}: name a registered model (qwen3q models list), not a path"
            ));
        }
        let registry = |n: &str| {
            store
                .model(n)
                .ok()
                .flatten()
                .map(|m| crate::config::ModelEntry {
                    path: m.path.into(),
                    template: m.template,
                })
        };
        config
            .resolve_model(
                name,
                None,
                &config_path,
                &registry,
                &crate::validated::ValidatedModels::new(checked.clone()),
            )
            .map_err(|e| e.to_string())
    };
    Ok(Some(crate::http::ApiSettings {
        addr,
        key,
        resolve_model: std::sync::Arc::new(resolve_model),
        max_attempts: ctx.config.max_attempts,
        chat_max_tokens: ctx.config.chat_max_tokens,
    }))
}

/// The runner: owns the store, serves the socket, drains the queue through llama.cpp.
fn run_runner(ctx: &Ctx, a: WorkerArgs) -> Result<i32> {
    let settings = RunSettings {
        n_ctx: a.n_ctx.unwrap_or(ctx.config.n_ctx),
        parallel: a.parallel.unwrap_or(ctx.config.parallel).max(1),
        window: window(ctx, &a)?,
        ac_only: a.ac_only || ctx.config.ac_only,
        adaptive: a.adaptive || ctx.config.adaptive,
        adapt_interval: Duration::from_millis(
            (ctx.config.adapt_interval_secs * 1000.0).max(100.0) as u64
        ),
        chunk_timeout: Duration::from_secs(
            a.chunk_timeout.unwrap_or(ctx.config.chunk_timeout_secs),
        ),
        yield_when_active: match &ctx.config.yield_when_active {
            Some(d) => Some((super::parse_duration(d)?, ctx.config.yield_to)),
            None => None,
        },
        ..RunSettings::default()
    };
    let (engine, inference) = engine(ctx, a.threads, a.kernels)?;
    let devices = Some(inference.devices);
    let mut probe = crate::monitor::system::SystemProbe::new(devices);
    let history_probe = crate::monitor::system::SystemProbe::new(devices);
    let options = WorkerOptions {
        settings,
        drain: a.drain,
        store: ctx.store_options(),
        budget: ctx.budget(probe.sample(crate::now_ms()).effective_total()),
        history_probe: Some(Box::new(history_probe)),
        history: crate::daemon::HistorySettings {
            every: Duration::from_millis(
                (ctx.config.history_sample_secs * 1000.0).max(100.0) as u64
            ),
            full: Duration::from_secs(ctx.config.history_full_hours * 3600),
            keep: Duration::from_secs(ctx.config.history_keep_days * 86_400),
        },
        http: http_settings(ctx, a.http.as_deref())?,
    };
    tracing::info!(home = %ctx.home.dir.display(), pid = std::process::id(), "worker starting");
    match daemon::run(
        &ctx.home,
        engine,
        Box::new(probe),
        options,
        Signals::default(),
    ) {
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
        Ok(Exit::NoMemory {
            jobs,
            need,
            free,
            delayed,
        }) => {
            let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
            let ids: Vec<String> = jobs.iter().take(5).map(|id| id.to_string()).collect();
            let who = match jobs.len() {
                1 => format!("job {} does not fit", ids[0]),
                n => format!(
                    "{n} jobs ({}{}) do not fit",
                    ids.join(", "),
                    if n > 5 { ", …" } else { "" }
                ),
            };
            let need = need.map_or_else(
                || "more than is free".to_string(),
                |n| format!("{:.2} GiB", gib(n)),
            );
            let delayed = if delayed > 0 {
                format!("; {delayed} more wait for a retry or their start time")
            } else {
                String::new()
            };
            fail(
                code::NO_MEMORY,
                format!(
                    "drained: {who} in memory even with every model unloaded: {} {need}, \
                     {:.2} GiB is free beyond the reserve; left queued (a smaller --parallel \
                     or --n-ctx, or more free memory, lets them run){delayed}",
                    if jobs.len() == 1 {
                        "it needs"
                    } else {
                        "the largest needs"
                    },
                    gib(free),
                ),
            )
        }
        Err(e @ DaemonError::AlreadyRunning(_)) => fail(code::BUSY, e.to_string()),
        Err(e @ DaemonError::Store(crate::queue::StoreError::Locked(_))) => {
            fail(code::BUSY, e.to_string())
        }
        Err(e) => fail(code::FAILURE, e.to_string()),
    }
}
