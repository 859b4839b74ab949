//! Memory history: what a sample holds, downsampling to minutes, the trend over a window, a
//! terminal sparkline and recommendations. Pure: samples in, summaries out. The store keeps the
//! samples (`queue::MemoryHistory`); the worker's sampler writes them.

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
    /// The model a job waits for memory to load, while the admission gate refuses it
    /// (schema v3).
    pub waiting_for: Option<String>,
    /// Load shed under critical pressure since the previous sample (schema v3).
    pub sheds: u32,
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
            waiting_for: group.iter().rev().find_map(|s| s.waiting_for.clone()),
            sheds: group.iter().map(|s| s.sheds).sum(),
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

/// How long each model waited for memory over `samples` (time order), longest first: each
/// sample that saw a wait counts until the next sample (at most `max_gap_ms`, so a gap in
/// the history, the worker not running, is not counted as waiting).
pub fn waits_by_model(samples: &[Sample], max_gap_ms: u64) -> Vec<(String, u64)> {
    let mut waited: std::collections::BTreeMap<String, u64> = Default::default();
    for pair in samples.windows(2) {
        if let Some(m) = &pair[0].waiting_for {
            let gap = pair[1].at.saturating_sub(pair[0].at).min(max_gap_ms);
            *waited.entry(m.clone()).or_default() += gap;
        }
    }
    let mut out: Vec<(String, u64)> = waited.into_iter().filter(|w| w.1 > 0).collect();
    out.sort_by_key(|w| std::cmp::Reverse(w.1));
    out
}

/// Advice for a model that waited `waited_ms` for memory, when `free` bytes (beyond the
/// reserve) were typically available: a registered variant that would fit (another
/// quantization of the same model first, else a smaller model of its family), or what a
/// 4-bit quantization would need.
pub fn wait_advice(
    model: &str,
    waited_ms: u64,
    registry: &[crate::registry::RegisteredModel],
    free: u64,
) -> String {
    let waited = human_duration(waited_ms);
    let head = format!("the {model} model waited {waited} for memory");
    let Some(me) = registry.iter().find(|m| m.name == model || m.path == model) else {
        return format!("{head}; a smaller model or quantization would start sooner");
    };
    let fits = |m: &&crate::registry::RegisteredModel| {
        m.architecture == me.architecture && m.file_bytes < me.file_bytes && m.file_bytes <= free
    };
    let same_size = registry
        .iter()
        .filter(|m| m.parameters == me.parameters)
        .filter(fits)
        .max_by_key(|m| m.file_bytes);
    if let Some(v) = same_size {
        return format!("{head}; {} ({}) would fit", v.name, v.quantization);
    }
    let smaller = registry
        .iter()
        .filter(|m| m.parameters < me.parameters)
        .filter(fits)
        .max_by_key(|m| (m.parameters, m.file_bytes));
    if let Some(v) = smaller {
        return format!("{head}; the smaller {} would fit", v.name);
    }
    // About 4.5 bits a weight (Q4_K_M), plus a tenth for the context.
    let four_bit = me.parameters * 45 / 80 * 11 / 10;
    if me.parameters > 0 && four_bit <= free && four_bit < me.file_bytes {
        format!(
            "{head}; a 4-bit variant (about {} MiB) would fit",
            four_bit >> 20
        )
    } else {
        format!("{head}; free more memory or register a smaller model")
    }
}

/// "3 h 05 min", "12 min", "40 s".
pub fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{} h {:02} min", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
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

/// A plain sample for tests: `used` percent of 100 bytes in use at `at`, B = 2, 10 tok/s.
/// Generated tokens per second while the worker generated, over `samples` (a recent window
/// of the history): the rate a batch's rest is estimated at. `None` without such a sample.
pub fn generating_rate(samples: &[Sample]) -> Option<f64> {
    let busy: Vec<f64> = samples
        .iter()
        .map(|s| s.tokens_per_sec)
        .filter(|r| r.is_finite() && *r > 0.0)
        .collect();
    (!busy.is_empty()).then(|| busy.iter().sum::<f64>() / busy.len() as f64)
}

#[cfg(test)]
pub(crate) fn test_sample(at: Millis, used: f64) -> Sample {
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
        waiting_for: None,
        sheds: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::test_sample as s;
    use super::*;

    #[test]
    fn the_rate_is_the_mean_while_generating() {
        let with = |tps: f64| Sample {
            tokens_per_sec: tps,
            ..s(1, 10.0)
        };
        assert_eq!(generating_rate(&[]), None);
        assert_eq!(generating_rate(&[with(0.0), with(0.0)]), None, "idle");
        let rate = generating_rate(&[with(0.0), with(100.0), with(f64::NAN), with(300.0)]);
        assert_eq!(rate, Some(200.0));
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
    fn waits_are_summed_per_model_and_gaps_are_not_waiting() {
        let mut v: Vec<Sample> = (0..10).map(|i| s(i * 1000, 50.0)).collect();
        for x in &mut v[2..5] {
            x.waiting_for = Some("big".into());
        }
        v[7].waiting_for = Some("other".into());
        // A gap of an hour after sample 7 (worker stopped): counts only up to max_gap.
        for x in &mut v[8..] {
            x.at += 3_600_000;
        }
        let w = waits_by_model(&v, 5_000);
        assert_eq!(
            w,
            vec![("other".to_string(), 5_000), ("big".to_string(), 3_000)]
        );
        // Minutes keep the wait and add up the sheds.
        v[3].sheds = 2;
        v[4].sheds = 1;
        let m = downsample_minutes(&v[..7]);
        assert_eq!((m[0].waiting_for.as_deref(), m[0].sheds), (Some("big"), 3));
    }

    #[test]
    fn wait_advice_names_a_variant_that_fits() {
        let m = |name: &str, params: u64, bytes: u64, q: &str| crate::registry::RegisteredModel {
            name: name.into(),
            path: format!("/m/{name}.gguf"),
            parts: vec![],
            template: None,
            architecture: "qwen3".into(),
            parameters: params,
            quantization: q.into(),
            file_bytes: bytes,
            added: 0,
        };
        const G: u64 = 1 << 30;
        let reg = vec![
            m("qwen3-8b-q8", 8_000_000_000, 8 * G + G / 2, "Q8_0"),
            m("qwen3-8b-q4", 8_000_000_000, 5 * G, "Q4_K_M"),
            m("qwen3-4b-q8", 4_000_000_000, 4 * G + G / 4, "Q8_0"),
        ];
        let a = wait_advice("qwen3-8b-q8", 3 * 3_600_000 + 300_000, &reg, 6 * G);
        assert_eq!(
            a,
            "the qwen3-8b-q8 model waited 3 h 05 min for memory; qwen3-8b-q4 (Q4_K_M) would fit"
        );
        let a = wait_advice("qwen3-8b-q8", 600_000, &reg, 4 * G + G / 2);
        assert!(a.ends_with("the smaller qwen3-4b-q8 would fit"), "{a}");
        let a = wait_advice("qwen3-8b-q8", 600_000, &reg[..1], 6 * G);
        assert!(
            a.ends_with("a 4-bit variant (about 4720 MiB) would fit"),
            "{a}"
        );
        let a = wait_advice("qwen3-8b-q8", 40_000, &reg, G);
        assert!(
            a.contains("waited 40 s") && a.ends_with("register a smaller model"),
            "{a}"
        );
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
