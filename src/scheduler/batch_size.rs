//! The adaptive batch size: a controller that sets B (sequences decoded together) from the
//! readings it is given. Pure.
//!
//! - It starts from a calibrated B (the knee of a measured throughput-by-B curve) or an
//!   estimate.
//! - It grows B by one while generated tokens/s improves and memory stays under the warning
//!   threshold; when a step up brings no gain it goes back and holds for a few readings, then
//!   tries again.
//! - It halves B when memory use jumps by more than 10 points of total in one interval, when an
//!   allocation fails (no KV slot, context or load failure), or when pressure turns critical;
//!   a halving lets it try growing again later.
//! - Long inputs lower the ceiling: over 16k tokens a quarter, over 8k a half.

use crate::monitor::Pressure;

/// One interval's readings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Share of total memory in use, in percent.
    pub used_percent: f64,
    pub pressure: Pressure,
    /// Generated tokens per second over the interval, at the current B.
    pub tokens_per_sec: f64,
    /// An allocation failed in the interval.
    pub alloc_failure: bool,
    /// The longest input (prompt tokens) among the sequences in flight.
    pub longest_input: u32,
}

/// See the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct Controller {
    b: u32,
    /// The configured most.
    max_b: u32,
    warn_percent: f64,
    /// Memory use at the previous reading (for jumps).
    last_used: Option<f64>,
    /// B and its throughput before the last step up: where to go back if the step brought no
    /// gain.
    before_growth: Option<(u32, f64)>,
    /// Growing brought nothing (or the gate refused it): readings to wait before trying again
    /// (the machine's speed changes, and one noisy reading must not pin B for a night).
    hold_left: u32,
}

/// A step up must improve throughput by this factor to be kept.
const GAIN: f64 = 1.02;

/// After a step up brought nothing, readings to hold before trying again.
const HOLD_READINGS: u32 = 6;

impl Controller {
    pub fn new(start: u32, max_b: u32, warn_percent: f64) -> Self {
        let max_b = max_b.max(1);
        Controller {
            b: start.clamp(1, max_b),
            max_b,
            warn_percent,
            last_used: None,
            before_growth: None,
            hold_left: 0,
        }
    }

    pub fn b(&self) -> u32 {
        self.b
    }

    /// The memory gate refused the B this controller asked for: stay, and hold a while
    /// (asking again at every reading would only be refused again).
    pub fn refused(&mut self, b: u32) {
        self.b = b.clamp(1, self.max_b);
        self.before_growth = None;
        self.hold_left = HOLD_READINGS;
    }

    /// B came out as `b` by other means (the fallback ladder shrank a load that did not fit):
    /// go on from there, growing again when the readings allow. The same B as now changes
    /// nothing (a new batch at the controller's own B keeps what it learned).
    pub fn settle(&mut self, b: u32) {
        let b = b.clamp(1, self.max_b);
        if b != self.b {
            self.b = b;
            self.before_growth = None;
            self.hold_left = 0;
        }
    }

    /// The most B may be for inputs of `longest_input` tokens.
    pub fn ceiling(&self, longest_input: u32) -> u32 {
        let c = if longest_input > 16_384 {
            self.max_b / 4
        } else if longest_input > 8_192 {
            self.max_b / 2
        } else {
            self.max_b
        };
        c.max(1)
    }

    /// Take an interval's readings; the B for the next interval.
    pub fn update(&mut self, r: &Reading) -> u32 {
        let jump = self.last_used.is_some_and(|u| r.used_percent - u > 10.0);
        self.last_used = Some(r.used_percent);
        let ceiling = self.ceiling(r.longest_input);
        if r.alloc_failure || jump || r.pressure == Pressure::Critical {
            self.b = (self.b / 2).max(1);
            self.before_growth = None;
            self.hold_left = 0;
        } else if let Some((prev_b, prev_tps)) = self.before_growth.take() {
            if r.tokens_per_sec < prev_tps * GAIN {
                // The step up brought nothing: go back and hold.
                self.b = prev_b;
                self.hold_left = HOLD_READINGS;
            } else {
                self.grow(r, ceiling);
            }
        } else {
            self.grow(r, ceiling);
        }
        self.b = self.b.min(ceiling);
        self.b
    }

    fn grow(&mut self, r: &Reading, ceiling: u32) {
        let room = r.used_percent < self.warn_percent && r.pressure == Pressure::Normal;
        if self.hold_left > 0 {
            self.hold_left -= 1;
            return;
        }
        if room && self.b < ceiling {
            self.before_growth = Some((self.b, r.tokens_per_sec));
            self.b += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(used: f64, tps: f64) -> Reading {
        Reading {
            used_percent: used,
            pressure: Pressure::Normal,
            tokens_per_sec: tps,
            alloc_failure: false,
            longest_input: 500,
        }
    }

    #[test]
    fn settling_on_a_smaller_b_resumes_growth_from_there() {
        let mut c = Controller::new(4, 8, 80.0);
        c.update(&reading(40.0, 100.0));
        c.update(&reading(40.0, 90.0)); // 5 brought nothing: back to 4, holding
        assert_eq!(c.b(), 4);
        c.settle(4);
        assert_eq!(
            c.update(&reading(40.0, 500.0)),
            4,
            "still holding at the same B"
        );
        c.settle(2);
        assert_eq!(c.b(), 2);
        assert_eq!(c.update(&reading(40.0, 50.0)), 3, "grows again");
        c.settle(99);
        assert_eq!(c.b(), 8, "never past the most");
        // Refused by the gate at 8: back to 4, and no more growth until a halving.
        c.refused(4);
        assert_eq!(c.update(&reading(40.0, 500.0)), 4);
        assert_eq!(c.update(&reading(40.0, 600.0)), 4);
    }

    #[test]
    fn a_hold_ends_after_a_few_readings_and_growth_is_tried_again() {
        let mut c = Controller::new(4, 8, 80.0);
        c.update(&reading(40.0, 100.0)); // 4 → 5
        assert_eq!(c.update(&reading(40.0, 100.0)), 4, "5 brought nothing");
        for _ in 0..HOLD_READINGS {
            assert_eq!(c.update(&reading(40.0, 100.0)), 4, "holding");
        }
        assert_eq!(c.update(&reading(40.0, 100.0)), 5, "tries again");
        assert_eq!(
            c.update(&reading(40.0, 130.0)),
            6,
            "and keeps a step that pays"
        );
    }

    #[test]
    fn grows_while_throughput_improves_then_goes_back_and_holds() {
        let mut c = Controller::new(1, 8, 80.0);
        // Throughput of each B: it improves up to 4, then flattens.
        let tps = |b: u32| [0.0, 40.0, 70.0, 90.0, 100.0, 100.5, 100.0, 99.0, 98.0][b as usize];
        let mut seen = vec![c.b()];
        for _ in 0..8 {
            let b = c.b();
            seen.push(c.update(&reading(40.0, tps(b))));
        }
        assert_eq!(&seen[..5], &[1, 2, 3, 4, 5], "grows by one");
        assert_eq!(seen[5], 4, "5 brought nothing: back to 4");
        assert!(seen[5..].iter().all(|&b| b == 4), "then holds: {seen:?}");
    }

    #[test]
    fn halves_on_a_jump_a_failure_or_critical_pressure_and_stops_at_warning() {
        let mut c = Controller::new(8, 8, 80.0);
        assert_eq!(c.update(&reading(50.0, 100.0)), 8);
        assert_eq!(c.update(&reading(65.0, 100.0)), 4, "a jump of 15 points");
        let fail = Reading {
            alloc_failure: true,
            ..reading(65.0, 100.0)
        };
        assert_eq!(c.update(&fail), 2);
        let critical = Reading {
            pressure: Pressure::Critical,
            ..reading(66.0, 100.0)
        };
        assert_eq!(c.update(&critical), 1);
        assert_eq!(c.update(&critical), 1, "never below one");
        // Above the warning threshold it does not grow.
        assert_eq!(c.update(&reading(85.0, 100.0)), 1);
        assert_eq!(c.update(&reading(60.0, 100.0)), 2, "room again: grows");
    }

    #[test]
    fn long_inputs_lower_the_ceiling() {
        let mut c = Controller::new(8, 8, 80.0);
        let long = Reading {
            longest_input: 10_000,
            ..reading(40.0, 10.0)
        };
        assert_eq!(c.update(&long), 4);
        let longer = Reading {
            longest_input: 20_000,
            ..reading(40.0, 10.0)
        };
        assert_eq!(c.update(&longer), 2);
        assert_eq!(Controller::new(2, 2, 80.0).ceiling(20_000), 1);
    }
}
