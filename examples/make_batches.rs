//! Make a store of many batches, for timing `status` and `batches` at scale (BENCHMARKS.md
//! "`status` with 100,000 batches"): N batches of one queued job each (every one open: the
//! most `status` could have to look through), written through the library's store as
//! `enqueue` writes them — one enqueue and one seal per batch.
//!
//! cargo run --release --example make_batches -- HOME [N] [MODEL]
//!
//! Then time the real binary on that home (commands in BENCHMARKS.md).

use std::path::PathBuf;
use std::time::Instant;

use qwen3q::batch::NewBatch;
use qwen3q::job::{document_sha256, GenParams, JobSpec, ModelRef, Task};
use qwen3q::queue::{BatchTarget, NewJob, OpenOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let home = PathBuf::from(args.get(1).expect("HOME"));
    let n: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let model = args.get(3).cloned().unwrap_or_else(|| {
        std::env::var("HOME").unwrap() + "/.cache/qwen3q/models/qwen3-tiny.gguf"
    });
    std::fs::create_dir_all(&home).unwrap();
    let store = qwen3q::queue::open(&home.join("store"), &OpenOptions::default()).unwrap();
    let t = Instant::now();
    for i in 0..n {
        let text = format!("document {i} of a batch of its own");
        let spec = JobSpec {
            custom_id: format!("d{i}"),
            source: format!("d{i}.txt"),
            doc_sha256: document_sha256(&text),
            doc_bytes: text.len() as u64,
            task: Task::Summarize,
            system: None,
            model: ModelRef {
                name: "tiny".into(),
                path: model.clone(),
                template: None,
            },
            params: GenParams {
                max_tokens: 8,
                ..GenParams::qwen3_defaults(false)
            },
            priority: 0,
            not_before: None,
            max_attempts: 3,
            extra_json: None,
            constraint: None,
            fallback: Vec::new(),
            auto: None,
        };
        let target = BatchTarget::New(NewBatch {
            name: Some(format!("night {i}")),
            metadata: vec![("run".into(), i.to_string())],
            deadline: None,
            source: format!("d{i}.txt"),
            api: None,
        });
        let now = qwen3q::now_ms();
        let done = store
            .enqueue_in(&[NewJob { spec, text }], false, now, &target)
            .unwrap();
        store.seal_batch(done.batch.unwrap(), now).unwrap();
        if (i + 1) % 10_000 == 0 {
            eprintln!("{} batches, {:.0} s", i + 1, t.elapsed().as_secs_f64());
        }
    }
    let (_, open) = store.open_batches(10).unwrap();
    println!(
        "{n} batches ({open} open) in {:.1} s at {}",
        t.elapsed().as_secs_f64(),
        home.display()
    );
}
