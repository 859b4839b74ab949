//! Generate from a raw prompt with the real engine, bypassing the queue: a quick way to see
//! what a model does with a prompt.
//!
//! cargo run --release --example generate -- MODEL.gguf "The capital of France is" [MAX_TOKENS]

// The engine binary's llama.cpp module (the library links no llama.cpp; see
// `qwen3q::cli::inference`).
#[allow(dead_code)] // the example uses the engine, not the device readings
#[path = "../src/bin/qwen3q-engine/llama/mod.rs"]
mod llama;

use llama::LlamaEngine;
use qwen3q::engine::EngineSettings;
use qwen3q::engine::{Control, Decoder, Residency, Sampling, Shape};
use qwen3q::job::ModelRef;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: generate MODEL.gguf PROMPT [MAX_TOKENS]");
        std::process::exit(2);
    }
    let max_tokens = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(32);
    let mut engine = LlamaEngine::new(EngineSettings::default()).unwrap();
    let model = ModelRef {
        name: "model".into(),
        path: args[1].clone(),
        template: Some("chatml".into()),
    };
    let info = engine
        .load(
            &model,
            Shape {
                n_ctx: 2048,
                n_seq: 1,
            },
            qwen3q::now_ms(),
        )
        .expect("load");
    eprintln!("{info:?}");
    let sampling = Sampling {
        max_tokens,
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        min_p: 0.0,
        seed: 0,
    };
    let g = engine
        .generate(
            &qwen3q::engine::Prompt::trusted(&args[2]),
            &sampling,
            &mut || Control::Continue,
        )
        .expect("generate");
    println!("{}", g.text);
    eprintln!(
        "{} prompt + {} generated tokens in {} ms ({:?})",
        g.prompt_tokens, g.completion_tokens, g.millis, g.finish
    );
}
