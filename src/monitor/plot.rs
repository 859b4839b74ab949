//! `qwen3q memory --plot FILE.svg`: memory use, B and tokens/s over time, drawn with plotters
//! (SVG backend: text is left to the viewer's fonts, so nothing is loaded here).

use std::path::Path;

use plotters::prelude::*;

use super::history::Sample;

/// Draw `samples` (time order) into an SVG file: memory use (% of total) on top, B and
/// generated tokens/s below, against minutes before the last sample. Gate waits and sheds
/// are marked on the memory chart at their times.
pub fn svg(samples: &[Sample], marks: &[(u64, String)], path: &Path) -> Result<(), String> {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return Err("no memory history to plot yet (the worker records it while it runs)".into());
    };
    let minutes = |at: u64| -((last.at.saturating_sub(at)) as f64) / 60_000.0;
    let x0 = minutes(first.at).min(-0.1);
    let root = SVGBackend::new(path, (1000, 700)).into_drawing_area();
    let e = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (top, bottom) = root.split_vertically(380);

    let mut mem = ChartBuilder::on(&top)
        .caption("memory use (% of total)", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(45)
        .build_cartesian_2d(x0..0.0, 0.0..100.0)
        .map_err(|x| e(&x))?;
    mem.configure_mesh()
        .x_desc("minutes before the last sample")
        .draw()
        .map_err(|x| e(&x))?;
    mem.draw_series(LineSeries::new(
        samples.iter().map(|s| (minutes(s.at), s.used_percent)),
        &RED,
    ))
    .map_err(|x| e(&x))?
    .label("used %");
    for (at, what) in marks.iter().filter(|(at, _)| *at >= first.at) {
        let x = minutes(*at);
        mem.draw_series(std::iter::once(PathElement::new(
            vec![(x, 0.0), (x, 100.0)],
            BLUE.mix(0.5),
        )))
        .map_err(|x| e(&x))?;
        mem.draw_series(std::iter::once(Text::new(
            what.clone(),
            (x, 95.0),
            ("sans-serif", 12),
        )))
        .map_err(|x| e(&x))?;
    }

    let max_b = samples.iter().map(|s| s.batch).max().unwrap_or(1).max(1) as f64;
    let max_tps = samples.iter().map(|s| s.tokens_per_sec).fold(1.0, f64::max);
    let mut perf = ChartBuilder::on(&bottom)
        .caption(
            "B (sequences together, green) and tokens/s (black, scaled)",
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(45)
        .build_cartesian_2d(x0..0.0, 0.0..max_b * 1.1)
        .map_err(|x| e(&x))?;
    perf.configure_mesh().draw().map_err(|x| e(&x))?;
    perf.draw_series(LineSeries::new(
        samples.iter().map(|s| (minutes(s.at), s.batch as f64)),
        &GREEN,
    ))
    .map_err(|x| e(&x))?;
    perf.draw_series(LineSeries::new(
        samples
            .iter()
            .map(|s| (minutes(s.at), s.tokens_per_sec / max_tps * max_b)),
        &BLACK,
    ))
    .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::Pressure;

    #[test]
    fn writes_a_valid_svg() {
        let samples: Vec<Sample> = (0..120)
            .map(|i| Sample {
                at: 1_000_000 + i * 1000,
                total: 100,
                available: 50,
                used_percent: 30.0 + (i % 20) as f64,
                pressure: Pressure::Normal,
                process_rss: 1,
                device_free: None,
                models: vec![],
                batch: 1 + (i / 30) as u32,
                tokens_per_sec: 10.0 * (1 + i / 30) as f64,
                queue_depth: 0,
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.svg");
        svg(&samples, &[(1_060_000, "shed: shrink_batch".into())], &path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("<svg") && text.trim_end().ends_with("</svg>"),
            "{}",
            &text[..100]
        );
        assert!(text.contains("<polyline"), "line series drawn");
        assert!(text.contains("shed: shrink_batch"));
        assert!(svg(&[], &[], &path)
            .unwrap_err()
            .contains("no memory history"));
    }
}
