//! Mutation fuzzing of the parsers of outside input, for as long as asked (the unit tests run a
//! few thousand cases of each; this runs millions). Each target's mutants come from real seeds;
//! a panic is caught, counted, and the input that caused it written to `fuzz-crash-*.bin`.
//!
//! ```sh
//! cargo run --release --example fuzz_parsers -- [SECONDS_PER_TARGET] [SEED]
//! ```
//! Prints, per target: cases, how many the parser accepted, cases a second, panics. The
//! figures go into RELIABILITY.md.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use qwen3q::fuzz::{mutate, Rng, Target};

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().map_or(60, |s| s.parse().expect("seconds"));
    let seed: u64 = args.next().map_or_else(
        || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64 | 1)
        },
        |s| s.parse().expect("seed"),
    );
    println!("seed {seed}, {secs} s a target");
    // Panics are counted, not printed case by case.
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = Rng(seed);
    let mut total_panics = 0;
    for target in Target::ALL {
        let seeds = target.seeds();
        let started = Instant::now();
        let (mut cases, mut accepted, mut panics) = (0u64, 0u64, 0u64);
        while started.elapsed() < Duration::from_secs(secs) {
            for _ in 0..1000 {
                let mut input = seeds[(cases as usize) % seeds.len()].clone();
                mutate(&mut input, &mut rng);
                cases += 1;
                match catch_unwind(AssertUnwindSafe(|| target.exercise(&input))) {
                    Ok(ok) => accepted += ok as u64,
                    Err(_) => {
                        panics += 1;
                        let file = format!("fuzz-crash-{:?}-{cases}.bin", target);
                        let _ = std::fs::write(&file, &input);
                    }
                }
            }
        }
        let rate = cases as f64 / started.elapsed().as_secs_f64();
        println!(
            "{:<20} {cases:>10} cases  {accepted:>9} accepted  {rate:>9.0}/s  {panics} panics",
            target.name()
        );
        total_panics += panics;
    }
    if total_panics > 0 {
        std::process::exit(1);
    }
}
