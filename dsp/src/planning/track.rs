//! One track's plan as one record: the global chain and each section's
//! settings, planned from the sections' character under the mode and
//! sliders (moved by a reference track's character and tonal match where
//! there is one), or given whole by an earlier render's settings.
//!
//! Planning comes in two steps because a section's loudness offset is
//! planned on what the limiter will get: [`TrackPlan::planned`] before the
//! chain's pass (the chain needs the tone), [`TrackPlan::settle`] after it
//! (the loudness of each section as the chain left it).

use crate::analysis::reference::BandGain;
use crate::analysis::sections::Section;
use crate::planning::modes::Mode;
use crate::planning::plan::{global, plan, set_loudness, SectionPlan, Sliders};
use crate::process::chain::ChainSettings;

/// What a reference track changes in a plan.
#[derive(Clone, Debug)]
pub struct ReferenceMove {
    /// Multiplies the mode's compressor ratio (its loudness range and PLR
    /// against the mix's).
    pub compression_factor: f64,
    /// Multiplies the mode's section contrast.
    pub contrast_factor: f64,
    /// The EQ that moves the mix's tonal balance towards the reference's.
    pub match_eq: Vec<BandGain>,
}

/// The chain and every section's settings of one track.
#[derive(Clone, Debug)]
pub struct TrackPlan {
    pub chain: ChainSettings,
    pub sections: Vec<SectionPlan>,
    /// How the sections' loudness is planned after the chain's pass; none
    /// for a plan given whole (it keeps its offsets).
    loudness: Option<(Mode, Sliders, f64)>,
}

impl TrackPlan {
    /// A plan given whole (an earlier render's `master_settings.json`).
    pub fn given(chain: ChainSettings, sections: Vec<SectionPlan>) -> Self {
        Self {
            chain,
            sections,
            loudness: None,
        }
    }

    /// The mode's chain under the sliders and each section's tone from its
    /// (intensity, emotion word); loudness offsets come in [`Self::settle`].
    pub fn planned(
        mode: Mode,
        sliders: Sliders,
        sections: &[Section],
        character: &[(f64, String)],
        reference: Option<ReferenceMove>,
    ) -> Self {
        let mut mode_chain = mode.chain();
        let (mut contrast, mut match_eq) = (1.0, Vec::new());
        if let Some(r) = reference {
            mode_chain.compressor.ratio =
                (mode_chain.compressor.ratio * r.compression_factor).clamp(1.0, 20.0);
            contrast = r.contrast_factor;
            match_eq = r.match_eq;
        }
        Self {
            chain: ChainSettings {
                match_eq,
                ..global(&mode_chain, sliders)
            },
            sections: plan(sections, character, &mode_chain, mode, sliders),
            loudness: Some((mode, sliders, contrast)),
        }
    }

    /// After the chain's pass: each section's loudness offset planned on its
    /// loudness there (`processed_lufs`), so the plan's contrast is what the
    /// limiter receives; the report keeps the raw input's (`input_lufs`).
    pub fn settle(&mut self, processed_lufs: &[f64], input_lufs: &[f64]) {
        if let Some((mode, sliders, contrast)) = self.loudness {
            set_loudness(&mut self.sections, processed_lufs, mode, sliders, contrast);
        }
        for (p, l) in self.sections.iter_mut().zip(input_lufs) {
            p.input_lufs = *l;
        }
    }
}
