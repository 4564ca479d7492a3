//! The one validator for what a user chooses, from the command line
//! (`loopmind master`) or a manifest (`loopmind coordinator`): target names,
//! sliders and amounts. Each problem is pushed with the name the user wrote
//! (`--dynamics`, `dynamics`), so every problem is listed at once.

use loopmind_dsp::plan::{Amounts, Sliders};
use loopmind_dsp::targets::{self, Format, Target};

/// Preset targets by name; unknown and repeated names are problems of `whose`.
pub fn targets(names: &[String], whose: &str, problems: &mut Vec<String>) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    for n in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        match targets::preset(n) {
            Some(t) if !out.iter().any(|o| o.name == t.name) => out.push(t),
            Some(_) => problems.push(format!("{whose}: target '{n}' listed twice")),
            None => problems.push(format!(
                "{whose}: unknown target '{n}' (known: {})",
                targets::preset_names().join(", ")
            )),
        }
    }
    out
}

/// The sliders, defaults for what is not given; `names` are how the user
/// calls dynamics and reactivity (`--dynamics` or `dynamics`).
pub fn sliders(
    dynamics: Option<f64>,
    reactivity: Option<f64>,
    amount: Amounts,
    names: [&str; 2],
    problems: &mut Vec<String>,
) -> Sliders {
    let mut s = Sliders::default();
    for (name, value, slot) in [
        (names[0], dynamics, &mut s.dynamics),
        (names[1], reactivity, &mut s.reactivity),
    ] {
        if let Some(v) = value {
            if (0.0..=1.0).contains(&v) {
                *slot = v;
            } else {
                problems.push(format!("{name}: {v} is outside 0..1"));
            }
        }
    }
    match amount.out_of_range() {
        Some((name, v)) => problems.push(format!("amount.{name}: {v} is outside 0..1")),
        None => s.amount = amount,
    }
    s
}

/// Encoded deliverables by name ("wav" is always written); unknown and
/// repeated names are problems of `whose`.
pub fn formats(names: &[String], whose: &str, problems: &mut Vec<String>) -> Vec<Format> {
    let mut out = Vec::new();
    for n in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let f = match n {
            "wav" => continue,
            "flac" => Format::Flac,
            "aac" => Format::Aac,
            "mp3" => Format::Mp3,
            "opus" => Format::Opus,
            "vorbis" | "ogg" => Format::Vorbis,
            other => {
                problems.push(format!(
                    "{whose}: unknown format '{other}' (known: wav, flac, aac, mp3, opus, vorbis)"
                ));
                continue;
            }
        };
        if out.contains(&f) {
            problems.push(format!("{whose}: format '{n}' listed twice"));
        } else {
            out.push(f);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_named_as_the_user_wrote_it() {
        let mut p = Vec::new();
        let t = targets(
            &["spotify".into(), "nope".into(), "spotify".into()],
            "--targets",
            &mut p,
        );
        assert_eq!(t.len(), 1);
        let amount = Amounts {
            eq: 2.0,
            ..Default::default()
        };
        let s = sliders(
            Some(0.2),
            Some(1.5),
            amount,
            ["--dynamics", "--reactivity"],
            &mut p,
        );
        assert_eq!(s.dynamics, 0.2);
        assert_eq!(s.reactivity, Sliders::default().reactivity);
        let all = p.join("\n");
        for want in [
            "--targets: unknown target 'nope'",
            "--targets: target 'spotify' listed twice",
            "--reactivity: 1.5 is outside 0..1",
            "amount.eq: 2 is outside 0..1",
        ] {
            assert!(all.contains(want), "missing {want} in\n{all}");
        }
    }
}
