//! Hostile material: files whose headers lie, silence inside a song, a
//! small file that decodes to a lot.

use super::ffmpeg_convert;
use loopmind_dsp::testsignals::{song, SongSection};
use loopmind_dsp::Audio;
use std::path::Path;
use std::process::Command;

/// A FLAC made by ffmpeg whose STREAMINFO total-samples field (36 bits) is
/// set to all ones: a header promising 432 hours.
pub fn lying_flac(src: &Path, dst: &Path) {
    ffmpeg_convert(src, dst, &["-c:a", "flac"]);
    let mut b = std::fs::read(dst).unwrap();
    assert_eq!(&b[..4], b"fLaC");
    // fLaC, block header (4), then STREAMINFO: total samples start at bit 4
    // of its 14th byte.
    let at = 8 + 13;
    b[at] |= 0x0f;
    b[at + 1..at + 5].fill(0xff);
    std::fs::write(dst, b).unwrap();
}

/// An MP3 whose Xing/Info frame count is all ones.
pub fn lying_mp3(src: &Path, dst: &Path) {
    ffmpeg_convert(src, dst, &["-c:a", "libmp3lame", "-b:a", "128k"]);
    let mut b = std::fs::read(dst).unwrap();
    let at = b
        .windows(4)
        .position(|w| w == b"Xing" || w == b"Info")
        .expect("ffmpeg writes a Xing/Info header");
    assert!(b[at + 7] & 1 == 1, "frame count present");
    b[at + 8..at + 12].fill(0xff);
    std::fs::write(dst, b).unwrap();
}

/// A song with 2 s of digital silence in its middle.
pub fn song_with_silence() -> Audio {
    let s = SongSection::new;
    let (mut a, _) = song(
        44_100,
        &[
            s("Intro", 2, -9.0, false, false, false),
            s("Verse", 3, -6.0, true, true, false),
            s("Chorus", 4, 0.0, true, true, true),
        ],
        5,
    );
    for c in &mut a.channels {
        c[5 * 44_100..7 * 44_100].fill(0.0);
    }
    a
}

/// A 4-minute 48 kHz stereo FLAC (a tone: a few hundred KB that decode to
/// 92 MB of samples).
pub fn long_flac(path: &Path) {
    tone_flac(path, 48_000, 240.0);
}

/// A stereo FLAC of a 220 Hz tone: tiny, whatever it decodes to.
pub fn tone_flac(path: &Path, rate: u32, seconds: f64) {
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency=220:sample_rate={rate}:duration={seconds}"
        ))
        .args(["-ac", "2", "-c:a", "flac"])
        .arg(path)
        .status()
        .expect("ffmpeg");
    assert!(st.success());
}

/// The arrangement of [`song_with_silence`]: a 0.2 s section (under one
/// 400 ms block) and an all-silent one.
pub const SILENCES_ARRANGEMENT: &str = r#"{"structure": [
    {"section": "intro", "start": 0.0, "end": 4.0},
    {"section": "blip", "start": 4.0, "end": 4.2},
    {"section": "gap", "start": 5.2, "end": 6.8},
    {"section": "chorus", "start": 6.8, "end": 18.0}]}"#;
