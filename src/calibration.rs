//! Calibration curves: a model's measured throughput by B, and the knee the adaptive batch size
//! starts at. Pure: the sweep that measures them is `engine::calibrate`, the store keeps them,
//! the scheduler reads the knee.

use serde::{Deserialize, Serialize};

use crate::job::Millis;

/// A model's generated tokens/s by B (sequences decoded together) at one context size per
/// sequence, measured by `qwen3q calibrate`. The adaptive batch size starts at its knee.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub n_ctx: u32,
    /// In order of B.
    pub points: Vec<CurvePoint>,
    pub at: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub n_seq: u32,
    /// Generated tokens per second, all sequences together.
    pub tokens_per_sec: f64,
    /// Weights plus what the context allocated at this B.
    pub memory: u64,
}

impl Calibration {
    /// The smallest B that reaches 90 % of the best throughput.
    pub fn knee(&self) -> Option<u32> {
        let curve: Vec<(u32, f64)> = self
            .points
            .iter()
            .map(|p| (p.n_seq, p.tokens_per_sec))
            .collect();
        knee(&curve)
    }
}

/// The knee of a throughput-by-B curve: the smallest B that reaches 90 % of the best
/// throughput (more sequences beyond it cost memory for little gain).
pub fn knee(curve: &[(u32, f64)]) -> Option<u32> {
    let best = curve.iter().map(|c| c.1).fold(0.0, f64::max);
    let mut points: Vec<(u32, f64)> = curve.to_vec();
    points.sort_by_key(|p| p.0);
    points
        .into_iter()
        .find(|p| p.1 >= 0.9 * best && best > 0.0)
        .map(|p| p.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_knee_is_the_smallest_b_near_the_best() {
        let curve = [(1, 40.0), (2, 70.0), (4, 95.0), (8, 100.0)];
        assert_eq!(knee(&curve), Some(4));
        assert_eq!(knee(&[]), None);
    }
}
