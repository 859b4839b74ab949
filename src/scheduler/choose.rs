//! `--model auto --quality …`: which registered model to run a job on, by the memory free when
//! the job is claimed. Pure: candidates with their predicted needs in, a choice and its reason
//! out.
//!
//! The familiar ladder (a 14B model at 8 bits with plenty of memory, down to 1.7B at 4 bits
//! when memory is scarce), expressed over what the registry holds: models are ranked by
//! parameters, then by bits a weight; `high` takes the best-ranked model that fits, `low` the
//! smallest *adequate* one (at least 4 bits a weight: below that answers degrade quickly; an
//! inadequate one only when nothing adequate fits), `medium` the middle of the adequate ones
//! that fit.

use crate::job::{ModelRef, Quality};

/// A registered model, as the choice sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub model: ModelRef,
    pub parameters: u64,
    pub file_bytes: u64,
    /// Bytes it needs beyond what is in memory already (a loaded model: only its context).
    pub need: u64,
}

impl Candidate {
    /// Bits a weight, from the file size (0 parameters: unknown, taken as adequate).
    pub fn bits(&self) -> f64 {
        if self.parameters == 0 {
            return 16.0;
        }
        self.file_bytes as f64 * 8.0 / self.parameters as f64
    }

    fn adequate(&self) -> bool {
        // Q4_0 is 4.5 bits a weight with its scales, Q3_K_M about 3.9: 4.0 separates them.
        self.bits() >= 4.0
    }
}

/// What the choice came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// Run on `model`; `smaller` (fitting, best first) are its fallbacks should the load fail
    /// after all; `reason` goes into the result.
    Run {
        model: ModelRef,
        smaller: Vec<ModelRef>,
        reason: String,
    },
    /// Nothing fits now: wait for memory.
    Wait { smallest_need: u64, free: u64 },
}

fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

/// Choose among `candidates` (not empty) with `free` bytes available beyond the reserve.
pub fn choose(candidates: &[Candidate], free: u64, quality: Quality) -> Choice {
    let mut ranked: Vec<&Candidate> = candidates.iter().collect();
    ranked.sort_by(|a, b| {
        (a.parameters, a.bits())
            .partial_cmp(&(b.parameters, b.bits()))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let fitting: Vec<&Candidate> = ranked.iter().copied().filter(|c| c.need <= free).collect();
    if fitting.is_empty() {
        return Choice::Wait {
            smallest_need: ranked.iter().map(|c| c.need).min().unwrap_or(0),
            free,
        };
    }
    let adequate: Vec<&Candidate> = fitting.iter().copied().filter(|c| c.adequate()).collect();
    let pool = if adequate.is_empty() {
        &fitting
    } else {
        &adequate
    };
    let (chosen, why) = match quality {
        Quality::High => (
            *fitting.last().expect("not empty"),
            format!(
                "the largest of {} registered models that fits",
                candidates.len()
            ),
        ),
        Quality::Low => (
            pool[0],
            if adequate.is_empty() {
                "the smallest model that fits (none of at least 4 bits a weight fits)".to_string()
            } else {
                "the smallest adequate model (at least 4 bits a weight) that fits".to_string()
            },
        ),
        Quality::Medium => (
            pool[pool.len() / 2],
            format!("the middle of the {} adequate models that fit", pool.len()),
        ),
    };
    let smaller = fitting
        .iter()
        .rev()
        .filter(|c| (c.parameters, c.bits()) < (chosen.parameters, chosen.bits()))
        .map(|c| c.model.clone())
        .collect();
    Choice::Run {
        model: chosen.model.clone(),
        smaller,
        reason: format!(
            "auto ({}): {} — {why}: needs {}, {} free",
            quality.as_str(),
            chosen.model.name,
            gib(chosen.need),
            gib(free)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 1 << 30;

    /// A model of `b` billion parameters at `bits` a weight, needing its file plus 1 GiB.
    fn c(name: &str, b: f64, bits: f64) -> Candidate {
        let parameters = (b * 1e9) as u64;
        let file_bytes = (parameters as f64 * bits / 8.0) as u64;
        Candidate {
            model: ModelRef {
                name: name.into(),
                path: format!("/m/{name}.gguf"),
                template: None,
            },
            parameters,
            file_bytes,
            need: file_bytes + G,
        }
    }

    fn ladder() -> Vec<Candidate> {
        vec![
            c("14b-q8", 14.8, 8.5),
            c("14b-q4", 14.8, 4.8),
            c("8b-q4", 8.2, 4.8),
            c("4b-q4", 4.0, 4.8),
            c("1.7b-q4", 2.0, 4.8),
            c("1.7b-q2", 2.0, 2.9),
        ]
    }

    fn name(ch: &Choice) -> &str {
        match ch {
            Choice::Run { model, .. } => &model.name,
            Choice::Wait { .. } => "wait",
        }
    }

    #[test]
    fn plenty_of_memory_high_takes_14b_at_8_bits_low_the_smallest_adequate() {
        let l = ladder();
        assert_eq!(name(&choose(&l, 64 * G, Quality::High)), "14b-q8");
        assert_eq!(name(&choose(&l, 64 * G, Quality::Low)), "1.7b-q4");
        // Five adequate models fit: the middle one.
        assert_eq!(name(&choose(&l, 64 * G, Quality::Medium)), "8b-q4");
    }

    #[test]
    fn scarce_memory_walks_down_the_ladder() {
        let l = ladder();
        // 10 GiB: 14b-q4 (8.3 GiB + 1) fits, 14b-q8 does not.
        assert_eq!(name(&choose(&l, 10 * G, Quality::High)), "14b-q4");
        // 3 GiB: only the 1.7B models fit.
        assert_eq!(name(&choose(&l, 3 * G, Quality::High)), "1.7b-q4");
        assert_eq!(name(&choose(&l, 3 * G, Quality::Low)), "1.7b-q4");
        // 2 GiB: only the 2-bit one fits; low takes it, saying so.
        match choose(&l, 2 * G, Quality::Low) {
            Choice::Run { model, reason, .. } => {
                assert_eq!(model.name, "1.7b-q2");
                assert!(reason.contains("none of at least 4 bits"), "{reason}");
            }
            w => panic!("{w:?}"),
        }
        match choose(&l, G / 2, Quality::High) {
            Choice::Wait {
                smallest_need,
                free,
            } => {
                assert_eq!(free, G / 2);
                assert_eq!(smallest_need, l[5].need);
            }
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn the_reason_and_the_fallbacks_are_given() {
        let l = ladder();
        match choose(&l, 10 * G, Quality::High) {
            Choice::Run {
                model,
                smaller,
                reason,
            } => {
                assert_eq!(model.name, "14b-q4");
                let names: Vec<&str> = smaller.iter().map(|m| m.name.as_str()).collect();
                assert_eq!(names, ["8b-q4", "4b-q4", "1.7b-q4", "1.7b-q2"]);
                assert!(
                    reason.starts_with("auto (high): 14b-q4 — the largest of 6 registered models that fits: needs 9.3 GiB, 10.0 GiB free"),
                    "{reason}"
                );
            }
            w => panic!("{w:?}"),
        }
    }

    #[test]
    fn a_loaded_model_needing_little_is_preferred_only_by_rank() {
        let mut l = ladder();
        // The 4B model is loaded: it needs only its context now.
        l[3].need = G / 4;
        assert_eq!(name(&choose(&l, G, Quality::High)), "4b-q4");
        assert_eq!(name(&choose(&l, 64 * G, Quality::High)), "14b-q8");
    }
}
