//! Memory history: what a sample holds, downsampling to minutes, the trend over a window, a
//! terminal sparkline and recommendations. Pure: samples in, summaries out. The store keeps the
//! samples (`queue/history.rs`); the worker's sampler writes them.

use serde::{Deserialize, Serialize};

use super::Pressure;
use crate::job::Millis;

/// One reading of the machine and the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub at: Millis,
    pub total: u64,
    pub available: u64,
    /// Share of the effective total in use (cgroup-aware), percent.
    pub used_percent: f64,
    pub pressure: Pressure,
    pub process_rss: u64,
    /// Free memory of llama.cpp's first non-CPU device, else of the CPU device.
    pub device_free: Option<u64>,
    /// Loaded models and their bytes.
    pub models: Vec<(String, u64)>,
    /// Sequences decoded together, and generated tokens per second since the last sample.
    pub batch: u32,
    pub tokens_per_sec: f64,
    /// Jobs queued.
    pub queue_depth: u64,
}

/// The average of each minute's samples (pressure: the worst; models: the last), stamped with
/// the minute's start. `samples` in time order.
pub fn downsample_minutes(samples: &[Sample]) -> Vec<Sample> {
    let mut out: Vec<Sample> = Vec::new();
    let mut group: Vec<&Sample> = Vec::new();
    let flush = |group: &mut Vec<&Sample>, out: &mut Vec<Sample>| {
        let Some(last) = group.last() else { return };
        let n = group.len() as f64;
        let avg = |f: &dyn Fn(&Sample) -> f64| group.iter().map(|s| f(s)).sum::<f64>() / n;
        out.push(Sample {
            at: last.at / 60_000 * 60_000,
            total: avg(&|s| s.total as f64) as u64,
            available: avg(&|s| s.available as f64) as u64,
            used_percent: avg(&|s| s.used_percent),
            pressure: group
                .iter()
                .map(|s| s.pressure)
                .max()
                .unwrap_or(Pressure::Normal),
            process_rss: avg(&|s| s.process_rss as f64) as u64,
            device_free: last.device_free,
            models: last.models.clone(),
            batch: avg(&|s| s.batch as f64).round() as u32,
            tokens_per_sec: avg(&|s| s.tokens_per_sec),
            queue_depth: last.queue_depth,
        });
        group.clear();
    };
    for s in samples {
        if group.last().is_some_and(|g| g.at / 60_000 != s.at / 60_000) {
            flush(&mut group, &mut out);
        }
        group.push(s);
    }
    flush(&mut group, &mut out);
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Increasing,
    Decreasing,
    Stable,
}

/// Memory use over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trend {
    pub samples: usize,
    pub average: f64,
    pub peak: f64,
    pub minimum: f64,
    pub current: f64,
    pub direction: Direction,
}

/// The trend of memory use (percent) over `samples` (time order): the direction compares the
/// last third's mean with the first third's; two points either way is a move.
pub fn trend(samples: &[Sample]) -> Option<Trend> {
    let used: Vec<f64> = samples.iter().map(|s| s.used_percent).collect();
    let current = *used.last()?;
    let n = used.len();
    let third = (n / 3).max(1);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let delta = mean(&used[n - third..]) - mean(&used[..third]);
    let direction = if n < 3 || delta.abs() < 2.0 {
        Direction::Stable
    } else if delta > 0.0 {
        Direction::Increasing
    } else {
        Direction::Decreasing
    };
    Some(Trend {
        samples: n,
        average: mean(&used),
        peak: used.iter().copied().fold(f64::MIN, f64::max),
        minimum: used.iter().copied().fold(f64::MAX, f64::min),
        current,
        direction,
    })
}

/// A sparkline of `values` in at most `width` characters (each the mean of its bucket), scaled
/// 0–100 (percentages).
pub fn sparkline(values: &[f64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    if values.is_empty() || width == 0 {
        return String::new();
    }
    let per = values.len().div_ceil(width);
    values
        .chunks(per)
        .map(|c| {
            let v = c.iter().sum::<f64>() / c.len() as f64;
            BARS[((v.clamp(0.0, 100.0) / 100.0) * 7.0).round() as usize]
        })
        .collect()
}

/// What a person may want to do, from the trend and the latest sample.
pub fn recommendations(
    trend: &Trend,
    latest: &Sample,
    warn_percent: f64,
    critical_percent: f64,
) -> Vec<String> {
    let mut out = Vec::new();
    if latest.pressure == Pressure::Critical || trend.current >= critical_percent {
        out.push(format!(
            "critical: memory use is {:.0} %; cleanup needed (close other programs, lower --parallel, or a smaller model)",
            trend.current
        ));
    } else if trend.current >= warn_percent {
        out.push(format!(
            "warning: memory use is {:.0} %, above {:.0} %; the batch will not grow",
            trend.current, warn_percent
        ));
    }
    if trend.direction == Direction::Increasing {
        out.push(format!(
            "usage trending upward ({:.0} % → {:.0} %)",
            trend.minimum, trend.current
        ));
    }
    if trend.peak - trend.minimum > 30.0 {
        out.push("memory use swings widely: other programs compete for memory".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at: Millis, used: f64) -> Sample {
        Sample {
            at,
            total: 100,
            available: (100.0 - used) as u64,
            used_percent: used,
            pressure: Pressure::Normal,
            process_rss: 10,
            device_free: None,
            models: vec![],
            batch: 2,
            tokens_per_sec: 10.0,
            queue_depth: 3,
        }
    }

    #[test]
    fn minutes_average_their_samples() {
        let samples = vec![s(60_000, 10.0), s(61_000, 30.0), s(125_000, 50.0)];
        let m = downsample_minutes(&samples);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].at, m[0].used_percent), (60_000, 20.0));
        assert_eq!((m[1].at, m[1].used_percent), (120_000, 50.0));
        assert!(downsample_minutes(&[]).is_empty());
    }

    #[test]
    fn trend_direction_and_extremes() {
        let up: Vec<Sample> = (0..30).map(|i| s(i * 1000, 40.0 + i as f64)).collect();
        let t = trend(&up).unwrap();
        assert_eq!(t.direction, Direction::Increasing);
        assert_eq!((t.minimum, t.peak, t.current), (40.0, 69.0, 69.0));
        let down: Vec<Sample> = (0..30).map(|i| s(i * 1000, 70.0 - i as f64)).collect();
        assert_eq!(trend(&down).unwrap().direction, Direction::Decreasing);
        let flat: Vec<Sample> = (0..30)
            .map(|i| s(i * 1000, 50.0 + (i % 2) as f64))
            .collect();
        assert_eq!(trend(&flat).unwrap().direction, Direction::Stable);
        assert!(trend(&[]).is_none());
    }

    #[test]
    fn sparklines_scale_percentages() {
        assert_eq!(sparkline(&[0.0, 50.0, 100.0], 10), "▁▅█");
        assert_eq!(sparkline(&[0.0, 0.0, 100.0, 100.0], 2), "▁█");
        assert_eq!(sparkline(&[], 5), "");
    }

    #[test]
    fn recommendations_say_what_matters() {
        let up: Vec<Sample> = (0..30).map(|i| s(i * 1000, 60.0 + i as f64)).collect();
        let t = trend(&up).unwrap();
        let mut latest = up.last().unwrap().clone();
        let r = recommendations(&t, &latest, 80.0, 90.0);
        assert!(r.iter().any(|x| x.starts_with("warning")), "{r:?}");
        assert!(r.iter().any(|x| x.contains("trending upward")), "{r:?}");
        latest.pressure = Pressure::Critical;
        let r = recommendations(&t, &latest, 80.0, 90.0);
        assert!(
            r[0].starts_with("critical: memory use is 89 %; cleanup needed"),
            "{r:?}"
        );
    }
}
