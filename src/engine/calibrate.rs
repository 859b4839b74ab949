//! `qwen3q calibrate MODEL`: a short sweep of B (sequences decoded together) on one model,
//! measuring generated tokens per second the way the worker runs: continuous batching, a
//! finished sequence's slot refilled at once, `2 × B` sequences per point. The curve is stored;
//! the adaptive batch size starts at its knee.
//!
//! Runs on any [`Engine`] (the real one from the CLI, the fake one in unit tests).

use std::time::Instant;

use super::{Engine, EngineError, Sampling, SeqRequest, Shape};
use crate::job::{ChatMessage, Millis, ModelRef};
use crate::registry::{Calibration, CurvePoint, MemoryRecord};

/// What to sweep.
#[derive(Debug, Clone)]
pub struct SweepSettings {
    /// Context per sequence (the worker's `n_ctx`: a curve is kept per context size).
    pub n_ctx: u32,
    /// B values, in order (e.g. 1, 2, 4, 8).
    pub batch_sizes: Vec<u32>,
    /// Tokens each sequence generates at most.
    pub max_tokens: u32,
}

/// The B values to try up to `max`: powers of two, and `max` itself.
pub fn batch_sizes(max: u32) -> Vec<u32> {
    let max = max.max(1);
    let mut v: Vec<u32> = std::iter::successors(Some(1u32), |b| b.checked_mul(2))
        .take_while(|&b| b < max)
        .collect();
    v.push(max);
    v
}

/// The sweep's outcome: the curve, each point's measured load, and why it stopped early.
#[derive(Debug)]
pub struct Sweep {
    pub calibration: Calibration,
    pub memory: Vec<MemoryRecord>,
    /// The B that did not fit in memory, and why, if the sweep stopped there.
    pub stopped: Option<(u32, SweepError)>,
}

/// Why a point of the sweep could not run: the engine's error, or the caller's memory gate
/// refusing the shape (its reason; the gate is the scheduler's, not the engine's).
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Refused(String),
}

impl SweepError {
    /// For lack of memory: a smaller B (or a quieter machine) may do.
    pub fn is_memory(&self) -> bool {
        match self {
            SweepError::Engine(e) => e.is_memory(),
            SweepError::Refused(_) => true,
        }
    }
}

/// A prompt that makes any instruction model write at length.
const PROMPT: &str = "Write a long, detailed story about a lighthouse keeper who finds a \
    message in a bottle. Describe the island, the weather, the keeper's daily routine, the \
    message itself and what the keeper decides to do about it. Use many paragraphs.";

/// Sweep `settings.batch_sizes` on `model`. `admit` is asked before each load (the memory
/// gate: a refusal, with its reason, means the shape does not fit now); `progress` hears each point as
/// it is measured. A B that does not fit in memory ends the sweep (the points before it are
/// kept); any other error ends it with that error.
pub fn sweep(
    engine: &mut dyn Engine,
    model: &ModelRef,
    settings: &SweepSettings,
    now: Millis,
    admit: &mut dyn FnMut(Shape, bool) -> Result<(), String>,
    progress: &mut dyn FnMut(&CurvePoint),
) -> Result<Sweep, SweepError> {
    let mut points = Vec::new();
    let mut memory = Vec::new();
    let mut stopped = None;
    let sampling = Sampling {
        max_tokens: settings.max_tokens,
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        min_p: 0.0,
        seed: 0,
    };
    let mut prompt = None;
    for &b in &settings.batch_sizes {
        let shape = Shape {
            n_ctx: settings.n_ctx,
            n_seq: b,
        };
        let loaded = !points.is_empty();
        let loading = admit(shape, loaded)
            .map_err(SweepError::Refused)
            .and_then(|()| Ok(engine.load(model, shape, now)?));
        let info = match loading {
            Ok(info) => info,
            Err(e) if e.is_memory() && !points.is_empty() => {
                stopped = Some((b, e));
                break;
            }
            Err(e) => return Err(e),
        };
        let prompt = match &prompt {
            Some(p) => p,
            None => prompt.insert(engine.render(&[ChatMessage {
                role: "user".into(),
                content: PROMPT.into(),
            }])?),
        };
        if points.is_empty() {
            // Warm up (first touches of the weights) outside the measurement.
            let warm = Sampling {
                max_tokens: 4,
                ..sampling.clone()
            };
            engine.generate(prompt, &warm, &mut || super::Control::Continue)?;
        }
        let tokens_per_sec = match run_point(engine, prompt, &sampling, info.n_seq) {
            Ok(tps) => tps,
            Err(e) if e.is_memory() && !points.is_empty() => {
                stopped = Some((b, e.into()));
                break;
            }
            Err(e) => return Err(e.into()),
        };
        let mem = info.memory.map_or(info.size_bytes, |m| m.total());
        if let Some(m) = info.memory {
            memory.push(m);
        }
        let point = CurvePoint {
            n_seq: info.n_seq,
            tokens_per_sec,
            memory: mem,
        };
        progress(&point);
        points.push(point);
    }
    Ok(Sweep {
        calibration: Calibration {
            n_ctx: settings.n_ctx,
            points,
            at: now,
        },
        memory,
        stopped,
    })
}

/// `2 × b` sequences through `b` slots, each refilled as soon as it frees: generated tokens
/// per second over the whole run.
fn run_point(
    engine: &mut dyn Engine,
    prompt: &super::Prompt,
    sampling: &Sampling,
    b: u32,
) -> Result<f64, EngineError> {
    let total = 2 * b as u64;
    let (mut started, mut ended) = (0u64, 0u64);
    let before = engine.generated_tokens();
    let t0 = Instant::now();
    while ended < total {
        while started < total && engine.free_slots() > 0 {
            started += 1;
            engine.start(SeqRequest {
                tag: started,
                prompt: prompt.clone(),
                sampling: sampling.clone(),
                grammar: None,
                stop: Vec::new(),
                urgent: false,
            })?;
        }
        for done in engine.step()? {
            done.result?;
            ended += 1;
        }
    }
    let secs = t0.elapsed().as_secs_f64().max(1e-6);
    Ok(engine.generated_tokens().saturating_sub(before) as f64 / secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::FakeEngine;

    fn model() -> ModelRef {
        ModelRef {
            name: "m".into(),
            path: "m.gguf".into(),
            template: None,
        }
    }

    #[test]
    fn batch_sizes_are_powers_of_two_up_to_the_most() {
        assert_eq!(batch_sizes(8), vec![1, 2, 4, 8]);
        assert_eq!(batch_sizes(6), vec![1, 2, 4, 6]);
        assert_eq!(batch_sizes(1), vec![1]);
        assert_eq!(batch_sizes(0), vec![1]);
    }

    #[test]
    fn a_sweep_measures_each_b_and_its_knee_follows_the_throughput() {
        let mut engine = FakeEngine::new(4096);
        // A step costs the same at any B: throughput grows with B.
        engine.token_delay = std::time::Duration::from_millis(2);
        let log = engine.log.clone();
        let settings = SweepSettings {
            n_ctx: 1024,
            batch_sizes: vec![1, 2, 4],
            max_tokens: 8,
        };
        let mut heard = Vec::new();
        let s = sweep(
            &mut engine,
            &model(),
            &settings,
            7,
            &mut |_, _| Ok(()),
            &mut |p| heard.push(p.n_seq),
        )
        .unwrap();
        assert_eq!(heard, vec![1, 2, 4]);
        assert_eq!(log.lock().unwrap().shapes, vec![1, 2, 4]);
        let tps: Vec<f64> = s
            .calibration
            .points
            .iter()
            .map(|p| p.tokens_per_sec)
            .collect();
        assert!(tps[0] < tps[1] && tps[1] < tps[2], "{tps:?}");
        assert_eq!((s.calibration.n_ctx, s.calibration.at), (1024, 7));
        assert_eq!(s.calibration.knee(), Some(4));
        assert!(s.stopped.is_none());
        // Each point ran 2 × B sequences (plus one warm-up).
        assert_eq!(log.lock().unwrap().prompts.len(), 1 + 2 + 4 + 8);
    }

    #[test]
    fn a_b_that_does_not_fit_ends_the_sweep_with_the_points_before_it() {
        let mut engine = FakeEngine::new(4096);
        // Contexts of B = 4 and more fail for memory.
        engine.max_seqs_that_fit = Some(2);
        let settings = SweepSettings {
            n_ctx: 1024,
            batch_sizes: vec![1, 2, 4, 8],
            max_tokens: 4,
        };
        let s = sweep(
            &mut engine,
            &model(),
            &settings,
            0,
            &mut |_, _| Ok(()),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(s.calibration.points.len(), 2);
        let (b, e) = s.stopped.unwrap();
        assert!(b == 4 && e.is_memory(), "{b} {e}");
        // The gate refuses B = 2 before anything loads: the sweep stops there.
        let mut engine = FakeEngine::new(4096);
        let log = engine.log.clone();
        let mut gate = |shape: Shape, loaded: bool| {
            assert_eq!(loaded, shape.n_seq > 1, "after B = 1 the model is loaded");
            if shape.n_seq >= 2 {
                Err("waiting for memory".to_string())
            } else {
                Ok(())
            }
        };
        let s = sweep(&mut engine, &model(), &settings, 0, &mut gate, &mut |_| {}).unwrap();
        assert_eq!(s.calibration.points.len(), 1);
        assert_eq!(log.lock().unwrap().shapes, vec![1]);
        assert!(matches!(s.stopped, Some((2, SweepError::Refused(_)))));
        // Nothing fits at all: that is an error, not an empty curve.
        let mut engine = FakeEngine::new(4096);
        let mut never = |_: Shape, _: bool| Err("waiting for memory".to_string());
        let e = sweep(&mut engine, &model(), &settings, 0, &mut never, &mut |_| {}).unwrap_err();
        assert!(matches!(e, SweepError::Refused(_)) && e.is_memory());
    }
}
