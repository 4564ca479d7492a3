//! `loudness.png`: the input's and a master's short-term loudness over time,
//! the target line, and the sections with their labels. People look at this
//! before they read numbers.

use loopmind_dsp::plan::SectionPlan;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

/// DejaVu Sans (free licence, see assets/DejaVuSans.LICENSE), embedded so
/// the picture has text on any machine.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

/// Short-term (3 s) loudness every 0.5 s from K-weighted energy per 100 ms
/// sub-block: (seconds, LUFS).
pub fn short_term(blocks: &[f64], hop_frames: usize) -> Vec<(f64, f64)> {
    (29..blocks.len())
        .step_by(5)
        .map(|i| {
            let e: f64 = blocks[i - 29..=i].iter().sum::<f64>() / (30 * hop_frames) as f64;
            ((i + 1) as f64 * 0.1, -0.691 + 10.0 * (e + 1e-12).log10())
        })
        .collect()
}

pub struct Picture<'a> {
    pub title: &'a str,
    pub input: &'a [(f64, f64)],
    pub master: &'a [(f64, f64)],
    pub master_label: &'a str,
    pub target_lufs: f64,
    pub sections: &'a [SectionPlan],
    pub duration: f64,
}

pub fn draw(path: &Path, p: &Picture) -> Result<(), String> {
    REGISTER.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let root = BitMapBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let lo = p
        .input
        .iter()
        .chain(p.master)
        .map(|x| x.1)
        .filter(|v| v.is_finite())
        .fold(p.target_lufs, f64::min)
        .max(-60.0)
        - 3.0;
    let hi = p
        .input
        .iter()
        .chain(p.master)
        .map(|x| x.1)
        .fold(p.target_lufs, f64::max)
        + 3.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(p.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(0.0..p.duration.max(1.0), lo..hi)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("short-term loudness (LUFS)")
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| err(&e))?;
    // Sections: alternating shades, boundaries, labels.
    for (i, s) in p.sections.iter().enumerate() {
        let shade = if i % 2 == 0 {
            RGBColor(240, 244, 250)
        } else {
            RGBColor(250, 250, 250)
        };
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(s.start, lo), (s.end, hi)],
                shade.filled(),
            )))
            .map_err(|e| err(&e))?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{} ({})", s.section, s.emotion),
                (s.start + 0.3, hi - 0.4),
                ("sans-serif", 14),
            )))
            .map_err(|e| err(&e))?;
    }
    let target = p.target_lufs;
    chart
        .draw_series(LineSeries::new(
            [(0.0, target), (p.duration, target)],
            RED.mix(0.6).stroke_width(1),
        ))
        .map_err(|e| err(&e))?
        .label(format!("target {target} LUFS"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], RED));
    chart
        .draw_series(LineSeries::new(
            p.input.iter().copied(),
            RGBColor(120, 120, 120).stroke_width(2),
        ))
        .map_err(|e| err(&e))?
        .label("input mix")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], RGBColor(120, 120, 120)));
    chart
        .draw_series(LineSeries::new(
            p.master.iter().copied(),
            BLUE.stroke_width(2),
        ))
        .map_err(|e| err(&e))?
        .label(p.master_label.to_string())
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLUE));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
