//! A process from start to exit: parse the command line, start logging, run the verb, turn
//! errors into one line and an exit code. Both binaries (`qwen3q`, `qwen3q-engine`) are this.

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::filter::{self, FilterExt};
use tracing_subscriber::layer::Filter;
use tracing_subscriber::{fmt, prelude::*, EnvFilter};

use super::args::{Cli, Command};
use super::inference::Inference;
use super::{code, Coded};

/// `RUST_LOG`'s levels, else `default`'s; and none of llama.cpp's lines about a decode that a
/// chat stopped, which is routine but reported by llama.cpp as a failure (`engine::quiet`).
fn levels<S>(default: &str) -> impl Filter<S> {
    let levels = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    levels.and(filter::filter_fn(|meta| {
        meta.target() != "llama-cpp-2" || !crate::engine::quiet::muted()
    }))
}

/// Logs: stderr for every verb; the worker also writes daily files under `<home>/logs` (14
/// kept), as JSON lines with `QWEN3Q_LOG_JSON=1`. `RUST_LOG` overrides the levels.
fn init_logging(cli: &Cli) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let is_worker = matches!(cli.command, Command::Worker(_));
    let base = match (is_worker, cli.verbose) {
        (_, 2..) => "debug",
        (true, _) | (false, 1) => "info",
        (false, 0) => "warn",
    };
    // llama.cpp is chatty at info: keep its lines at warn unless asked. sled's own warnings
    // go to the worker's log; a command's error is its one line.
    let sled = if is_worker { "warn" } else { "off" };
    let default = format!("{base},llama-cpp-2=warn,sled={sled}");
    let stderr = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(levels(&default));
    let mut guard = None;
    let file = if is_worker {
        crate::home::Home::resolve(cli.home.as_deref())
            .ok()
            .and_then(|home| {
                home.ensure().ok()?; // the home is private (0700): create it before its logs
                std::fs::create_dir_all(home.logs()).ok()?;
                let appender = tracing_appender::rolling::Builder::new()
                    .rotation(tracing_appender::rolling::Rotation::DAILY)
                    .filename_prefix("worker")
                    .filename_suffix("log")
                    .max_log_files(14)
                    .build(home.logs())
                    .ok()?;
                let (writer, g) = tracing_appender::non_blocking(appender);
                guard = Some(g);
                // JSON lines on request (QWEN3Q_LOG_JSON=1), for log shippers.
                let json = std::env::var("QWEN3Q_LOG_JSON").is_ok_and(|v| v == "1" || v == "true");
                let layer = fmt::layer().with_writer(writer).with_ansi(false);
                let layer: Box<dyn tracing_subscriber::Layer<_> + Send + Sync> = if json {
                    Box::new(layer.json().with_filter(levels(&default)))
                } else {
                    Box::new(layer.with_filter(levels(&default)))
                };
                Some(layer)
            })
    } else {
        None
    };
    tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .init();
    guard
}

/// The whole command: parse, log, run the verb with this binary's inference (none in `qwen3q`),
/// exit with its code (see [`super::code`]).
pub fn main(inference: Option<&'static Inference>) -> ! {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Worker(_)) {
        // A command whose output goes to a pipe that closes (`qwen3q show 1 | head`) ends
        // quietly, as Unix tools do, instead of panicking on the failed print. The worker
        // keeps Rust's default (SIGPIPE ignored): a client closing its socket must not kill it.
        // SAFETY: setting a signal's disposition to its default has no preconditions.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let _guard = init_logging(&cli);
    let code = match super::run(cli, inference) {
        Ok(code) => code,
        Err(e) => {
            let code = e
                .downcast_ref::<Coded>()
                .map(|c| c.0)
                .unwrap_or(code::FAILURE);
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("qwen3q: error: {msg}");
            code
        }
    };
    std::process::exit(code);
}
