//! Which binary decodes. `qwen3q` links no llama.cpp, so a command starts in a fraction of the
//! time (the dynamic C++ runtime, llama.cpp's static tables and a binary twice the size are
//! most of a command's cost through a running worker; BENCHMARKS.md "One enqueue through a
//! running worker"). The verbs that decode — the worker's runner and `calibrate` — run as
//! `qwen3q-engine`, the same CLI with llama.cpp linked in, installed beside `qwen3q`
//! (`cargo install` installs both): the worker's supervisor starts it as the runner,
//! `calibrate` becomes it (exec). pueue splits its client from its daemon for the same reason.
//!
//! The two must come from one build: `qwen3q` tells the engine its build ([`crate::BUILD`], a
//! hash of the sources) in the environment, and the engine refuses another one's — a stale
//! `qwen3q-engine` beside a rebuilt `qwen3q` would otherwise run old code against the store.

use std::path::PathBuf;

use anyhow::Result;

use super::{code, fail};
use crate::engine::{Engine, EngineError, EngineSettings};
use crate::monitor::DeviceMemory;

/// The engine binary's file name, beside `qwen3q`.
pub const ENGINE_BIN: &str = "qwen3q-engine";

/// Set by `qwen3q` when it starts or becomes the engine binary: its [`crate::BUILD`].
pub const BUILD_ENV: &str = "QWEN3Q_BUILD";

/// What a binary with an inference engine linked in gives the CLI.
pub struct Inference {
    /// A new engine with these settings.
    pub engine: fn(EngineSettings) -> Result<Box<dyn Engine>, EngineError>,
    /// The accelerators' memory, for the memory probe (none on a CPU-only build).
    pub devices: fn() -> Vec<DeviceMemory>,
}

/// The program that decodes: this one when it has an engine, else `qwen3q-engine` beside it.
pub fn program(inference: Option<&Inference>) -> Result<PathBuf> {
    let me = std::env::current_exe()?;
    if inference.is_some() {
        return Ok(me);
    }
    let engine = me.with_file_name(ENGINE_BIN);
    if !engine.is_file() {
        return fail(
            code::FAILURE,
            format!(
                "{} is missing: qwen3q decodes through it; install both binaries (`cargo install` \
                 does) or build both (`cargo build --release --bins`)",
                engine.display()
            ),
        );
    }
    Ok(engine)
}

/// This process's engine: the one linked in, or else (in `qwen3q`) this same command run again
/// as `qwen3q-engine`, which replaces this process and so never returns here on success.
pub fn require(inference: Option<&'static Inference>) -> Result<&'static Inference> {
    if let Some(inference) = inference {
        return Ok(inference);
    }
    use std::os::unix::process::CommandExt;
    let engine = program(None)?;
    let err = std::process::Command::new(&engine)
        .args(std::env::args_os().skip(1))
        .env(BUILD_ENV, crate::BUILD)
        .exec();
    fail(
        code::FAILURE,
        format!("cannot run {}: {err}", engine.display()),
    )
}

/// In the engine binary: refuse to run for a `qwen3q` of another build.
pub fn check_build() -> Result<()> {
    match std::env::var(BUILD_ENV) {
        Ok(theirs) if theirs != crate::BUILD => fail(
            code::FAILURE,
            format!(
                "{ENGINE_BIN} is from another build than the qwen3q that started it (build {} \
                 against {theirs}): build or install both together (`cargo build --release --bins`)",
                crate::BUILD
            ),
        ),
        _ => Ok(()),
    }
}
