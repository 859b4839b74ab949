//! The CLI: one file per verb, sharing the helpers below; `start` is a process from start to
//! exit, `inference` which binary decodes. Both binaries are this module: `qwen3q` without an
//! engine, `qwen3q-engine` with llama.cpp's. `anyhow` lives here only; the library below it
//! reports typed errors (thiserror).

pub mod args;
mod batches;
mod calibrate;
mod enqueue;
pub mod inference;
mod list;
mod memory;
mod models;
mod output;
mod plan;
mod results;
mod service;
mod show;
pub mod start;
mod status;
mod steer;
mod supervisor;
mod worker;

use std::time::Duration;

use anyhow::Result;

use crate::client::{ClientError, Connection};
use crate::config::Config;
use crate::home::Home;
use crate::protocol::{Request, Response};
use crate::queue::OpenOptions;
use args::{Cli, Command};
use inference::Inference;

/// Exit codes, documented in the README.
pub mod code {
    /// Something failed (store, worker, I/O).
    pub const FAILURE: i32 = 1;
    /// A bad command line (clap's code too).
    pub const USAGE: i32 = 2;
    /// Bad input: a path, a document, a model, a batch line was refused.
    pub const BAD_INPUT: i32 = 3;
    /// Another worker runs, or the store is busy.
    pub const BUSY: i32 = 4;
    /// A named job does not exist.
    pub const NOT_FOUND: i32 = 5;
    /// `worker --drain` ended with jobs that do not fit in memory even with every model
    /// unloaded (they stay queued).
    pub const NO_MEMORY: i32 = 6;
}

/// An error with its exit code. Its message is one line.
#[derive(Debug)]
pub struct Coded(pub i32, pub String);

impl std::fmt::Display for Coded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}
impl std::error::Error for Coded {}

pub fn fail<T>(code: i32, msg: impl Into<String>) -> Result<T> {
    Err(Coded(code, msg.into()).into())
}

/// What every verb needs: where the data lives, the configuration, what this binary decodes
/// with.
pub struct Ctx {
    pub home: Home,
    pub config: Config,
    /// The engine linked into this binary; none in `qwen3q` (see [`inference`]).
    pub inference: Option<&'static Inference>,
}

impl Ctx {
    /// The memory budget on a machine (or cgroup) with `total` bytes: defaults from it, then
    /// the config.
    pub fn budget(&self, total: u64) -> crate::scheduler::admission::Budget {
        let mut b =
            crate::scheduler::admission::Budget::from_total(total, cfg!(target_os = "macos"));
        if self.config.memory_reserve_mb > 0 {
            b.reserve = self.config.memory_reserve_mb * 1024 * 1024;
        }
        b.warn_percent = self.config.memory_warn_percent;
        b.critical_percent = self.config.memory_critical_percent;
        b.model_share = self.config.memory_model_share.clamp(0.01, 1.0);
        b.buffer_share = self.config.memory_buffer_share.clamp(0.01, 1.0);
        b
    }
}

impl Ctx {
    pub fn store_options(&self) -> OpenOptions {
        OpenOptions {
            cache_bytes: self.config.store_cache_mb.max(1) * 1024 * 1024,
            ..OpenOptions::default()
        }
    }

    /// The worker's socket, or the store itself.
    pub fn connect(&self) -> Result<Connection> {
        self.home.ensure()?;
        Connection::open(&self.home, &self.store_options()).map_err(|e| match e {
            ClientError::Busy => Coded(code::BUSY, e.to_string()).into(),
            other => anyhow::Error::from(other),
        })
    }

    /// The cache of models already checked, in this home.
    pub fn checked(&self) -> crate::validated::ValidatedModels {
        crate::validated::ValidatedModels::new(self.home.validated_models())
    }

    /// A registered model as a config entry, if the store knows the name.
    pub fn registered(&self, name: &str) -> Option<crate::config::ModelEntry> {
        match self.call(Request::ModelGet(name.to_string())) {
            Ok(Response::Model(Some(m))) => Some(crate::config::ModelEntry {
                path: m.path.into(),
                template: m.template,
            }),
            _ => None,
        }
    }

    /// One request, one answer; a worker's error answer becomes an error. A read-only request
    /// whose worker went away mid-call (it was stopping, or `--drain` just finished) is asked
    /// again, of the next worker or of the store itself.
    pub fn call(&self, request: Request) -> Result<Response> {
        let read_only = matches!(
            request,
            Request::Status
                | Request::List(_)
                | Request::Show(_)
                | Request::Results(_)
                | Request::ModelList
                | Request::ModelGet(_)
                | Request::ModelMemory(_)
                | Request::Calibrations(_)
                | Request::MemoryHistory { .. }
                | Request::Batches { .. }
                | Request::Batch(_)
        );
        if matches!(request, Request::Status) {
            if let Some(answer) = crate::client::status_from_card(&self.home) {
                return Ok(answer);
            }
        }
        let mut conn = self.connect()?;
        let answer = match conn.call(request.clone()) {
            Err(ClientError::Socket(..) | ClientError::Protocol(_))
                if read_only && conn.is_worker() =>
            {
                drop(conn);
                std::thread::sleep(Duration::from_millis(300));
                self.connect()?.call(request)?
            }
            other => other?,
        };
        match answer {
            Response::Error(e) => fail(code::FAILURE, e),
            Response::NotFound(e) => fail(code::NOT_FOUND, e),
            r => Ok(r),
        }
    }
}

/// The longest duration a command line may give: a century. Anything longer is a typo, and
/// in milliseconds from now it would not fit the clock's type.
const LONGEST: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Parse `45s`, `30m`, `12h`, `7d`, `2w` (a bare number is seconds), at most a century. A bad
/// one is a bad command line (exit 2).
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let bad = |why: &str| fail(code::USAGE, format!("bad duration {s:?}: {why}"));
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let Ok(n) = num.parse::<u64>() else {
        return if num.is_empty() {
            bad("a number first (e.g. 30m, 12h, 7d)")
        } else {
            bad("longer than a century")
        };
    };
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return bad("units are s, m, h, d, w"),
    };
    match n.checked_mul(secs).map(Duration::from_secs) {
        Some(d) if d <= LONGEST => Ok(d),
        _ => bad("longer than a century"),
    }
}

/// Milliseconds of a duration from [`parse_duration`] (at most a century: they fit).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub fn run(cli: Cli, inference: Option<&'static Inference>) -> Result<i32> {
    if inference.is_some() {
        inference::check_build()?;
    }
    // What needs no home or config: the command line's own description.
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = <args::Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "qwen3q", &mut std::io::stdout());
            return Ok(0);
        }
        Command::Man => {
            let cmd = <args::Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
            return Ok(0);
        }
        _ => {}
    }
    let home = Home::resolve(cli.home.as_deref())?;
    let config = Config::load(&home.config()).map_err(|e| Coded(code::BAD_INPUT, e.to_string()))?;
    let ctx = Ctx {
        home,
        config,
        inference,
    };
    match cli.command {
        Command::Enqueue(a) => enqueue::run(&ctx, *a),
        Command::Worker(a) => worker::run(&ctx, a),
        Command::Results(a) => results::run(&ctx, a),
        Command::Status(a) => status::run(&ctx, a.json),
        Command::List(a) => list::run(&ctx, a),
        Command::Show(a) => show::run(&ctx, &a.jobs, a.json),
        Command::Cancel(a) => steer::cancel(&ctx, &a),
        Command::Batches(a) => batches::list(&ctx, a),
        Command::Plan(a) => plan::run(&ctx, *a),
        Command::Batch(c) => batches::run(&ctx, c),
        Command::Retry(a) => steer::retry(&ctx, a),
        Command::Pause => steer::pause(&ctx, true),
        Command::Resume => steer::pause(&ctx, false),
        Command::Prune(a) => steer::prune(&ctx, a),
        Command::Models(m) => models::run(&ctx, m),
        Command::Memory(a) => memory::run(&ctx, a),
        Command::Calibrate(a) => calibrate::run(&ctx, a),
        Command::Service(c) => service::run(&ctx, c),
        Command::Completions { .. } | Command::Man => unreachable!("answered above"),
        Command::ApiKey => {
            ctx.home.ensure()?;
            let key = crate::http::ApiKey::load_or_create(&ctx.home.api_key()).map_err(|e| {
                Coded(
                    code::FAILURE,
                    format!("{}: {e}", ctx.home.api_key().display()),
                )
            })?;
            println!("{}", key.as_str());
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert!(parse_duration("7y").is_err());
        assert!(parse_duration("d").is_err());
        // Overflow is refused, not wrapped: a huge duration must not become a small one.
        for huge in [
            "99999999999999999w",
            "18446744073709551615s",
            "18446744073709551616",
            "3000000000000000d",
            "5300w",
        ] {
            let e = parse_duration(huge).unwrap_err();
            let coded = e.downcast_ref::<Coded>().expect("coded");
            assert_eq!(coded.0, code::USAGE, "{huge}: {coded}");
            assert!(coded.1.contains("century"), "{coded}");
        }
        assert_eq!(
            parse_duration("5200w").unwrap(),
            Duration::from_secs(5200 * 7 * 86_400)
        );
    }
}
