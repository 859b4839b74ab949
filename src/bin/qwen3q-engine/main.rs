//! `qwen3q-engine`: the same CLI as `qwen3q`, with llama.cpp linked in. `qwen3q` runs the
//! verbs that decode as this binary (the worker's runner, `calibrate`); every other verb works
//! here too. Its `llama` module is the only code that sees llama-cpp-2.

mod llama;

use qwen3q::cli::inference::Inference;
use qwen3q::engine::{Engine, EngineError, EngineSettings};

/// A llama.cpp engine with these settings.
fn engine(settings: EngineSettings) -> Result<Box<dyn Engine>, EngineError> {
    Ok(Box::new(llama::LlamaEngine::new(settings)?))
}

static LLAMA: Inference = Inference {
    engine,
    devices: llama::device_memory,
};

fn main() {
    qwen3q::cli::start::main(Some(&LLAMA))
}
