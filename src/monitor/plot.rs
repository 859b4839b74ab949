//! `qwen3q memory --plot FILE.svg|FILE.png`: memory use, B and tokens/s over time, drawn with
//! plotters, with the admission gate's waits and the sheds under critical pressure marked. The
//! marks come from the history itself, so past nights show theirs too. Text uses DejaVu Sans,
//! embedded (a headless server may have no fonts at all).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::history::Sample;

/// The picture format, from the file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Svg,
    Png,
}

impl Format {
    /// `.svg` or `.png` (any case); anything else is refused.
    pub fn of(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "svg" => Some(Format::Svg),
            "png" => Some(Format::Png),
            _ => None,
        }
    }
}

const SIZE: (u32, u32) = (1000, 700);

/// Draw `samples` (time order) into `path`, as SVG or PNG by its extension.
pub fn draw(samples: &[Sample], path: &Path) -> Result<(), String> {
    let format = Format::of(path)
        .ok_or_else(|| format!("{}: name the file .svg or .png", path.display()))?;
    if samples.is_empty() {
        return Err("no memory history to plot yet (the worker records it while it runs)".into());
    }
    register_font();
    match format {
        Format::Svg => charts(samples, SVGBackend::new(path, SIZE).into_drawing_area()),
        Format::Png => charts(samples, BitMapBackend::new(path, SIZE).into_drawing_area()),
    }
}

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The bytes are a known-good TTF: failing here would be a build defect.
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| ())
            .expect("the embedded DejaVu Sans font parses");
    });
}

/// Marks on the time axis: where a wait for memory began (with the model), and each
/// sample that saw load shed.
pub fn marks(samples: &[Sample]) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut waiting: Option<&str> = None;
    for s in samples {
        let now = s.waiting_for.as_deref();
        if let (Some(m), true) = (now, now != waiting) {
            out.push((s.at, format!("waits for memory: {m}")));
        }
        waiting = now;
        if s.sheds > 0 {
            out.push((s.at, format!("shed ×{}", s.sheds)));
        }
    }
    out
}

/// Memory use (% of total) on top, B and generated tokens/s below, against minutes before the
/// last sample. `samples` is not empty.
fn charts<DB: DrawingBackend>(
    samples: &[Sample],
    root: DrawingArea<DB, Shift>,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let (first, last) = (&samples[0], &samples[samples.len() - 1]);
    let minutes = |at: u64| -((last.at.saturating_sub(at)) as f64) / 60_000.0;
    let x0 = minutes(first.at).min(-0.1);
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
    .map_err(|x| e(&x))?;
    for (i, (at, what)) in marks(samples).into_iter().enumerate() {
        let x = minutes(at);
        mem.draw_series(std::iter::once(PathElement::new(
            vec![(x, 0.0), (x, 100.0)],
            BLUE.mix(0.5),
        )))
        .map_err(|x| e(&x))?;
        // Staggered, so that marks close together stay readable.
        let y = 95.0 - (i % 4) as f64 * 6.0;
        mem.draw_series(std::iter::once(Text::new(what, (x, y), ("sans-serif", 12))))
            .map_err(|x| e(&x))?;
    }

    let max_b = samples.iter().map(|s| s.batch).max().unwrap_or(1).max(1) as f64;
    let max_tps = samples.iter().map(|s| s.tokens_per_sec).fold(1.0, f64::max);
    let mut perf = ChartBuilder::on(&bottom)
        .caption(
            format!("B (sequences together, green) and tokens/s (black, peak {max_tps:.0})"),
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
    use crate::monitor::history::test_sample;

    fn samples() -> Vec<Sample> {
        (0..120)
            .map(|i| Sample {
                used_percent: 30.0 + (i % 20) as f64,
                batch: 1 + (i / 30) as u32,
                tokens_per_sec: 10.0 * (1 + i / 30) as f64,
                waiting_for: (10..20).contains(&i).then(|| "big-model".to_string()),
                sheds: u32::from(i == 60),
                ..test_sample(1_000_000 + i * 1000, 0.0)
            })
            .collect()
    }

    #[test]
    fn marks_show_where_waits_begin_and_sheds() {
        let m = marks(&samples());
        assert_eq!(
            m,
            vec![
                (1_010_000, "waits for memory: big-model".to_string()),
                (1_060_000, "shed ×1".to_string())
            ]
        );
    }

    #[test]
    fn writes_a_valid_svg_with_the_marks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.svg");
        draw(&samples(), &path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("<svg") && text.trim_end().ends_with("</svg>"),
            "{}",
            &text[..100]
        );
        assert!(text.contains("<polyline"), "line series drawn");
        assert!(text.contains("waits for memory: big-model"));
        assert!(text.contains("shed ×1"));
        assert!(draw(&[], &path).unwrap_err().contains("no memory history"));
        let bad = dir.path().join("m.jpg");
        assert!(draw(&samples(), &bad).unwrap_err().contains(".svg or .png"));
    }

    #[test]
    fn writes_a_png_of_the_right_size_with_text_drawn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.png");
        draw(&samples(), &path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), SIZE);
        // The caption "memory use (% of total)" is centred in the top 30 pixels, where nothing
        // else is drawn: dark pixels there are glyphs, so the embedded font was used.
        let dark = |x0: u32, x1: u32, y0: u32, y1: u32| {
            (x0..x1)
                .flat_map(|x| (y0..y1).map(move |y| (x, y)))
                .filter(|&(x, y)| img.get_pixel(x, y).0.iter().all(|&c| c < 128))
                .count()
        };
        assert!(dark(380, 620, 5, 30) > 100, "caption text drawn");
        assert_eq!(dark(0, 60, 0, 8), 0, "the corner is background");
        // The red memory line is there.
        let red = img
            .pixels()
            .filter(|p| p.0[0] > 200 && p.0[1] < 80 && p.0[2] < 80)
            .count();
        assert!(red > 100, "{red} red pixels");
    }
}
