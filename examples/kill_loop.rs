//! `kill -9` at random points, each followed by a restart: during drains of real documents,
//! during bulk enqueues, during migrations of a large store written by the previous schema.
//! After each kind: 0 jobs lost, 0 results duplicated, 0 chunks recorded twice, 0 jobs
//! charged a crash (panics otherwise, naming what broke). Figures for RELIABILITY.md.
//!
//! ```text
//! scripts/fetch-models.sh
//! cargo build --release --bins --examples
//! $CARGO_TARGET_DIR/release/examples/kill_loop [--drains 50] [--enqueues 25] [--migrations 25]
//!     [--seed N] [--model gemma|tiny] [--parallel 8]
//! ```
//!
//! The binary run is the `qwen3q` next to this example (`QWEN3Q_BIN` to name another). The
//! seed is printed first: the same seed draws the same moments (the machine decides what
//! runs at each of them). CI runs a short version of each loop (`tests/crash.rs`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::Instant;

use common::{gemma, kills, tiny, Rng, TestHome};

struct Args {
    drains: usize,
    enqueues: usize,
    migrations: usize,
    seed: u64,
    gemma: bool,
    parallel: u32,
}

fn args() -> Args {
    let mut a = Args {
        drains: 50,
        enqueues: 25,
        migrations: 25,
        seed: common::seed("kill_loop"),
        gemma: true,
        parallel: 8,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or("");
        let number = || {
            value
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{}: a number, not {value:?}", pair[0]))
        };
        match pair[0].as_str() {
            "--drains" => a.drains = number() as usize,
            "--enqueues" => a.enqueues = number() as usize,
            "--migrations" => a.migrations = number() as usize,
            "--seed" => a.seed = number(),
            "--parallel" => a.parallel = number() as u32,
            "--model" => a.gemma = value == "gemma",
            other => panic!("unknown argument {other} (see the head of examples/kill_loop.rs)"),
        }
    }
    a
}

/// The `qwen3q` to run: `QWEN3Q_BIN`, else the one built beside this example.
fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("QWEN3Q_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    // qwen3q decodes through qwen3q-engine beside it: both, from one build.
    for b in [dir.join("qwen3q"), dir.join("qwen3q-engine")] {
        assert!(
            b.exists(),
            "build them first: cargo build --release --bins --examples ({})",
            b.display()
        );
    }
    dir.join("qwen3q")
}

fn main() {
    let a = args();
    println!("seed {}", a.seed);
    let mut rng = Rng(a.seed);
    let started = Instant::now();
    let mut lines = Vec::new();

    if a.drains > 0 {
        let h = TestHome::with_bin(bin());
        let model = if a.gemma { gemma() } else { tiny() };
        let parallel = a.parallel.to_string();
        let line = kills::Drains {
            model: &model,
            short_docs: 24,
            long_docs: 8,
            max_tokens: "32",
            worker_args: &["--n-ctx", "512", "--parallel", &parallel],
            kills: a.drains,
            // Every other kill waits for a chunk to finish; the rest come within 3 s.
            more_chunks: 2,
            pause_ms: (0, 3000),
        }
        .run(&h, &mut rng);
        println!("{line} ({} at B={parallel})", model.display());
        lines.push(line);
    }

    if a.enqueues > 0 {
        // Half without a worker (the command writes the store), half through one.
        let docs = 3000;
        let files = TestHome::with_bin(bin());
        let dir = kills::enqueue_documents(&files, docs);
        for through_worker in [false, true] {
            let want = if through_worker {
                a.enqueues / 2
            } else {
                a.enqueues - a.enqueues / 2
            };
            let line = kills::enqueues(&bin(), &dir, &tiny(), docs, want, through_worker, &mut rng);
            println!("{line}");
            lines.push(line);
        }
    }

    if a.migrations > 0 {
        let h = TestHome::with_bin(bin());
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/store-v4-large.tar.gz");
        let line = kills::migrations(
            &h,
            &fixture,
            a.migrations,
            &mut rng,
            kills::check_large_v4_store,
        );
        kills::a_migrated_store_runs(&h);
        println!("{line}");
        lines.push(line);
    }

    println!(
        "\nseed {}: all checks held, {:.0} s in all\n{}",
        a.seed,
        started.elapsed().as_secs_f64(),
        lines.join("\n")
    );
}
