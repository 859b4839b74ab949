//! A warm start: the worker's runner loads the model it last decoded with while it opens the
//! store, instead of after. sled reads its page table on open (150–370 ms at 100,000 jobs),
//! which a restart after a `kill -9` or a reboot would otherwise add to the model's load before
//! its first token (BENCHMARKS.md "Restart").
//!
//! The hint — the batch's model and context shape, once the worker has produced tokens — is kept in
//! `<home>/warm.json` while the worker runs ([`keep_hint`]). No warm start when the hint is
//! missing, damaged or names a file that is gone, when the model does not fit in memory now
//! (the gate any load goes through), or when the supervisor says the runner before it died by a
//! signal soon after its start ([`COLD_START_ENV`]): a model whose load kills the process must
//! not kill every restart. A hinted model no job wants is an idle model like any other: the
//! LRU unloads it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::{gguf, Engine, Shape};
use crate::home::Home;
use crate::job::ModelRef;
use crate::monitor::MemoryProbe;
use crate::scheduler::admission::{admit_shares, Budget, Need};
use crate::scheduler::{LiveStatus, Shutdown};

/// Set by the supervisor for a runner whose predecessor died by a signal soon after its start.
pub const COLD_START_ENV: &str = "QWEN3Q_COLD_START";

/// A hint larger than this is not read (a model reference and a shape: a few hundred bytes).
const MAX_HINT_BYTES: u64 = 64 * 1024;

/// What the batch decoded with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hint {
    pub model: ModelRef,
    pub n_ctx: u32,
    pub n_seq: u32,
}

fn path(home: &Home) -> PathBuf {
    home.dir.join("warm.json")
}

/// The hint in `home`, if there is a readable one.
pub fn read(home: &Home) -> Option<Hint> {
    let hint: Hint = crate::home::read_small_json(&path(home), MAX_HINT_BYTES)?;
    (hint.n_ctx > 0 && hint.n_seq > 0).then_some(hint)
}

/// Replace the hint in `home` (a reader never sees half of one).
pub fn write(home: &Home, hint: &Hint) -> std::io::Result<()> {
    crate::home::replace_json(&path(home), hint)
}

/// The hint to load at start, if there is one and its model fits in memory now (see the module
/// docs).
pub fn plan(
    home: &Home,
    engine: &dyn Engine,
    probe: &mut dyn MemoryProbe,
    budget: &Budget,
) -> Option<Hint> {
    if std::env::var_os(COLD_START_ENV).is_some() {
        tracing::info!("cold start: the runner before this one died soon after its start");
        return None;
    }
    let hint = read(home)?;
    let need = need_of(Path::new(&hint.model.path), &hint, engine)?;
    let snap = probe.sample(crate::now_ms());
    if let Err(refusal) = admit_shares(&snap, need, 0, budget) {
        tracing::info!(model = %hint.model.name, %refusal, "no warm start");
        return None;
    }
    Some(hint)
}

/// `open` (the store) on a thread of its own while `engine` loads the planned hint here; its
/// answer. Without a hint, or without a thread, one after the other.
pub fn alongside<T: Send>(
    hint: Option<Hint>,
    engine: &mut dyn Engine,
    open: impl Fn() -> T + Sync,
) -> T {
    let Some(hint) = hint else {
        return open();
    };
    let load = |engine: &mut dyn Engine| {
        let shape = Shape {
            n_ctx: hint.n_ctx,
            n_seq: hint.n_seq,
        };
        match engine.load(&hint.model, shape, crate::now_ms()) {
            Ok(_) => tracing::info!(
                model = %hint.model.name,
                "warm start: the model loaded while the store opened"
            ),
            Err(e) => tracing::warn!(model = %hint.model.name, error = %e, "no warm start"),
        }
    };
    std::thread::scope(|scope| {
        match std::thread::Builder::new()
            .name("qwen3q-open".into())
            .spawn_scoped(scope, &open)
        {
            Ok(opening) => {
                load(engine);
                opening
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            }
            Err(_) => {
                load(engine);
                open()
            }
        }
    })
}

/// What loading the hint's model at its shape needs, predicted from its header (as the gate
/// predicts any first load); `None` when the file is gone or unreadable.
fn need_of(path: &Path, hint: &Hint, engine: &dyn Engine) -> Option<Need> {
    let p = gguf::facts_of(path).ok()?.predict(
        u64::from(hint.n_ctx),
        u64::from(hint.n_seq),
        engine.graph(),
    );
    Some(Need {
        weights: p.weights,
        context: p.total().saturating_sub(p.weights),
        n_seq: hint.n_seq,
    })
}

/// While the worker runs: keep the hint of the batch's model and shape once the worker has
/// produced tokens (checked every second; a change is written once).
pub async fn keep_hint(home: Home, status: Arc<Mutex<LiveStatus>>, shutdown: Shutdown) {
    let mut written = read(&home);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        let hint = {
            let st = status.lock().unwrap_or_else(|e| e.into_inner());
            match st.context.as_deref() {
                Some((model, shape)) if st.generated_tokens > 0 => Some(Hint {
                    model: model.clone(),
                    n_ctx: shape.n_ctx,
                    n_seq: shape.n_seq,
                }),
                _ => None,
            }
        };
        if let Some(hint) = hint {
            if written.as_ref() != Some(&hint) {
                match write(&home, &hint) {
                    Ok(()) => written = Some(hint),
                    Err(e) => tracing::debug!(error = %e, "no warm-start hint"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home() -> (tempfile::TempDir, Home) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(dir.path())).unwrap();
        (dir, home)
    }

    #[test]
    fn a_hint_is_read_back_and_a_damaged_one_is_none() {
        let (_dir, home) = home();
        assert!(read(&home).is_none());
        let hint = Hint {
            model: ModelRef {
                name: "m".into(),
                path: "/models/m.gguf".into(),
                template: Some("chatml".into()),
            },
            n_ctx: 4096,
            n_seq: 4,
        };
        write(&home, &hint).unwrap();
        assert_eq!(read(&home), Some(hint.clone()));
        let text = std::fs::read_to_string(path(&home)).unwrap();
        let mut rng = crate::fuzz::Rng(0x3a7e);
        for _ in 0..300 {
            let mut bytes = text.clone().into_bytes();
            crate::fuzz::mutate(&mut bytes, &mut rng);
            std::fs::write(path(&home), &bytes).unwrap();
            let _ = read(&home); // never panics
        }
        std::fs::write(path(&home), text.replace("4096", "0")).unwrap();
        assert!(read(&home).is_none(), "an empty shape");
        let mut huge = text.into_bytes();
        huge.extend(std::iter::repeat_n(b' ', MAX_HINT_BYTES as usize));
        std::fs::write(path(&home), huge).unwrap();
        assert!(read(&home).is_none(), "oversized");
    }
}
