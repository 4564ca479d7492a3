//! `loudness.png`: the input's and a master's short-term loudness over time,
//! the target line, and the sections with their labels. People look at this
//! before they read numbers.

use loopmind_dsp::planning::plan::SectionPlan;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Once;

/// DejaVu Sans (free licence, see assets/DejaVuSans.LICENSE), embedded so
/// the picture has text on any machine.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

/// Short-term (3 s) loudness every 0.5 s from K-weighted energy per 100 ms
/// sub-block: (seconds, LUFS).
pub(crate) fn short_term(blocks: &[f64], hop_frames: usize) -> Vec<(f64, f64)> {
    (29..blocks.len())
        .step_by(5)
        .map(|i| {
            let e: f64 = blocks[i - 29..=i].iter().sum::<f64>() / (30 * hop_frames) as f64;
            ((i + 1) as f64 * 0.1, -0.691 + 10.0 * (e + 1e-12).log10())
        })
        .collect()
}

pub(crate) struct Picture<'a> {
    pub title: &'a str,
    pub input: &'a [(f64, f64)],
    pub master: &'a [(f64, f64)],
    pub master_label: &'a str,
    pub target_lufs: f64,
    pub sections: &'a [SectionPlan],
    pub duration: f64,
}

/// A picture that could not be drawn or written.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub(crate) struct PlotError {
    path: PathBuf,
    pub(crate) reason: String,
}

/// What plotters' drawing calls fail with (their error types are generic
/// over the backend); made a [`PlotError`] naming the file in [`draw`].
type Drawn<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;
type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

pub(crate) fn draw(path: &Path, p: &Picture) -> Result<(), PlotError> {
    REGISTER.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
    draw_to(path, p).map_err(|e| PlotError {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn draw_to(path: &Path, p: &Picture) -> Drawn {
    let root = BitMapBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let (lo, hi) = level_range(p);
    let mut chart = ChartBuilder::on(&root)
        .caption(p.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(0.0..p.duration.max(1.0), lo..hi)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("short-term loudness (LUFS)")
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    draw_sections(&mut chart, p, (lo, hi))?;
    draw_curves(&mut chart, p)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}

/// The loudness axis: every curve and the target with 3 dB around them,
/// silence (-inf) and anything under -60 LUFS left below it.
fn level_range(p: &Picture) -> (f64, f64) {
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
    (lo, hi)
}

/// Sections: a colour per label, a thin line at each boundary, and the
/// labels placed so none overlaps another (see `place_labels`), with a key
/// for the labels shortened to fit.
fn draw_sections(chart: &mut Chart, p: &Picture, (lo, hi): (f64, f64)) -> Drawn {
    for s in p.sections {
        chart.draw_series(std::iter::once(Rectangle::new(
            [(s.start, lo), (s.end, hi)],
            colour(&s.section).filled(),
        )))?;
        chart.draw_series(std::iter::once(PathElement::new(
            [(s.start, lo), (s.start, hi)],
            WHITE.stroke_width(2),
        )))?;
    }
    let (x_px, _) = chart.plotting_area().dim_in_pixel();
    let placed = place_labels(p.sections, p.duration.max(1.0), x_px as f64);
    let row_db = (hi - lo) * ROW_PX / PLOT_PX;
    for l in &placed {
        let s = &p.sections[l.index];
        chart.draw_series(std::iter::once(Text::new(
            l.text.clone(),
            (
                s.start + TEXT_PAD_PX / x_px as f64 * p.duration.max(1.0),
                hi - 0.3 - l.row as f64 * row_db,
            ),
            ("sans-serif", 14),
        )))?;
    }
    let mut key: Vec<String> = Vec::new();
    for l in &placed {
        let full = &p.sections[l.index].section;
        let entry = format!("{} {}", abbreviation(full), full);
        if l.text == abbreviation(full) && !key.contains(&entry) {
            key.push(entry);
        }
    }
    if !key.is_empty() {
        chart.draw_series(std::iter::once(Text::new(
            key.join(" · "),
            (p.duration.max(1.0) * 0.01, lo + 0.4 * row_db),
            ("sans-serif", 13),
        )))?;
    }
    Ok(())
}

/// The target line, the input's and the master's loudness, each in the legend.
fn draw_curves(chart: &mut Chart, p: &Picture) -> Drawn {
    let target = p.target_lufs;
    chart
        .draw_series(LineSeries::new(
            [(0.0, target), (p.duration, target)],
            RED.mix(0.6).stroke_width(1),
        ))?
        .label(format!("target {target} LUFS"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], RED));
    chart
        .draw_series(LineSeries::new(
            p.input.iter().copied(),
            RGBColor(120, 120, 120).stroke_width(2),
        ))?
        .label("input mix")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], RGBColor(120, 120, 120)));
    chart
        .draw_series(LineSeries::new(
            p.master.iter().copied(),
            BLUE.stroke_width(2),
        ))?
        .label(p.master_label.to_string())
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLUE));
    Ok(())
}

/// The plot area's height in pixels (roughly: the picture less caption and
/// axis), and a row of labels in it.
const PLOT_PX: f64 = 430.0;
const ROW_PX: f64 = 17.0;
/// Rows labels may stagger over, gap between two in a row, text inset, and
/// the width of a character of the 14 px label font (DejaVu Sans runs a
/// little under 8 px a character; overestimating keeps them apart).
const ROWS: usize = 3;
const GAP_PX: f64 = 6.0;
const TEXT_PAD_PX: f64 = 3.0;
const CHAR_PX: f64 = 8.5;

/// A label placed on the picture: the section it names, the text (full,
/// label only, or abbreviated), its row and its horizontal extent (pixels).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Placed {
    pub index: usize,
    pub text: String,
    pub row: usize,
    pub x0: f64,
    pub x1: f64,
}

/// Places section labels over `width_px` so none overlaps another: each
/// takes the longest of "label (emotion)" (only inside its section),
/// "label" and its abbreviation that finds room in one of [`ROWS`] rows;
/// a section with no room goes unlabelled (its colour still says it).
pub(crate) fn place_labels(sections: &[SectionPlan], duration: f64, width_px: f64) -> Vec<Placed> {
    let mut rows: Vec<f64> = vec![f64::NEG_INFINITY; ROWS];
    let mut out = Vec::new();
    for (index, s) in sections.iter().enumerate() {
        let x0 = s.start / duration * width_px + TEXT_PAD_PX;
        let span = (s.end - s.start) / duration * width_px;
        let candidates = [
            (format!("{} ({})", s.section, s.emotion), true),
            (s.section.clone(), false),
            (abbreviation(&s.section), false),
        ];
        'find: for (text, inside) in candidates {
            let x1 = x0 + text.chars().count() as f64 * CHAR_PX;
            if (inside && x1 > x0 - TEXT_PAD_PX + span) || x1 > width_px {
                continue;
            }
            for (row, end) in rows.iter_mut().enumerate() {
                if x0 >= *end + GAP_PX {
                    *end = x1;
                    out.push(Placed {
                        index,
                        text,
                        row,
                        x0,
                        x1,
                    });
                    break 'find;
                }
            }
        }
    }
    out
}

/// A label's short form: the usual names by their first letters, "Part X"
/// by its letter.
pub(crate) fn abbreviation(label: &str) -> String {
    match label {
        "Intro" => "In".into(),
        "Verse" => "V".into(),
        "Chorus" => "Ch".into(),
        "Bridge" => "Br".into(),
        "Outro" => "Out".into(),
        l if l.starts_with("Part ") && l.len() > 5 => l[5..].chars().take(2).collect(),
        l => l.chars().take(3).collect(),
    }
}

/// A section's colour: one per label, the usual names fixed.
pub(crate) fn colour(label: &str) -> RGBColor {
    const PALETTE: [RGBColor; 8] = [
        RGBColor(232, 240, 228),
        RGBColor(246, 236, 222),
        RGBColor(236, 230, 246),
        RGBColor(226, 240, 244),
        RGBColor(246, 228, 236),
        RGBColor(240, 240, 224),
        RGBColor(228, 234, 246),
        RGBColor(238, 238, 238),
    ];
    match label {
        "Intro" | "Outro" => RGBColor(238, 238, 238),
        "Verse" => RGBColor(226, 236, 250),
        "Chorus" => RGBColor(252, 226, 214),
        "Bridge" => RGBColor(230, 246, 226),
        l => {
            let h = l
                .bytes()
                .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
            PALETTE[h as usize % PALETTE.len()]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(labels: &[&str], each_s: f64) -> Vec<SectionPlan> {
        labels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let p = loopmind_dsp::planning::plan::plan(
                    &[loopmind_dsp::analysis::sections::Section {
                        label: l.to_string(),
                        start: i as f64 * each_s,
                        end: (i + 1) as f64 * each_s,
                    }],
                    &[(0.5, "uplifting".into())],
                    &loopmind_dsp::planning::modes::Mode::Transparent.chain(),
                    loopmind_dsp::planning::modes::Mode::Transparent,
                    Default::default(),
                );
                p.into_iter().next().unwrap()
            })
            .collect()
    }

    #[test]
    fn thirty_sections_get_labels_that_do_not_overlap() {
        let names = ["Intro", "Verse", "Chorus", "Part A", "Bridge", "Outro"];
        let labels: Vec<&str> = (0..30).map(|i| names[i % names.len()]).collect();
        let secs = plan(&labels, 10.0);
        let placed = place_labels(&secs, 300.0, 1120.0);
        for (i, a) in placed.iter().enumerate() {
            for b in &placed[i + 1..] {
                assert!(
                    a.row != b.row || a.x1 + GAP_PX <= b.x0 || b.x1 + GAP_PX <= a.x0,
                    "{a:?} overlaps {b:?}"
                );
            }
            assert!(a.x1 <= 1120.0);
        }
        // Every section is named, most in full.
        assert_eq!(placed.len(), 30, "{placed:?}");
        assert!(
            placed
                .iter()
                .filter(|p| p.text == secs[p.index].section)
                .count()
                >= 15
        );
        // Five long sections: each in full with its emotion, one row.
        let long = plan(&names[..5], 60.0);
        let placed = place_labels(&long, 300.0, 1120.0);
        assert!(
            placed
                .iter()
                .all(|p| p.row == 0 && p.text.contains("(uplifting)")),
            "{placed:?}"
        );
        // Sixty in five minutes: still no overlap; the short form where needed.
        let crowded: Vec<&str> = (0..60).map(|i| names[i % names.len()]).collect();
        let placed = place_labels(&plan(&crowded, 5.0), 300.0, 1120.0);
        for (i, a) in placed.iter().enumerate() {
            for b in &placed[i + 1..] {
                assert!(a.row != b.row || a.x1 + GAP_PX <= b.x0 || b.x1 + GAP_PX <= a.x0);
            }
        }
        assert!(placed.len() >= 45, "{}", placed.len());
    }

    #[test]
    fn labels_have_their_colours_and_short_forms() {
        assert_ne!(colour("Chorus"), colour("Verse"));
        assert_eq!(colour("Part C"), colour("Part C"));
        assert_eq!(abbreviation("Part C"), "C");
        assert_eq!(abbreviation("Bridge"), "Br");
    }
}
