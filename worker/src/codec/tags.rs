//! What an encoded file says about itself: the track's tags and its
//! loudness as ReplayGain 2 (reference -18 LUFS) and, for Opus, R128 gain
//! (reference -23 LUFS, RFC 7845).

use crate::decode::Tags;

/// Tags for one encoded file.
#[derive(Clone, Debug, Default)]
pub struct FileTags {
    pub track: Tags,
    /// The master's integrated loudness and linear sample peak, when known.
    pub lufs: Option<f64>,
    pub peak: Option<f64>,
}

impl FileTags {
    /// Vorbis-comment pairs (Vorbis, Opus, FLAC).
    pub fn comments(&self) -> Vec<(String, String)> {
        let t = &self.track;
        let mut v: Vec<(String, String)> = [
            ("TITLE", &t.title),
            ("ARTIST", &t.artist),
            ("ALBUM", &t.album),
            ("ISRC", &t.isrc),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_string(), v.clone())))
        .collect();
        if let Some(l) = self.lufs.filter(|l| l.is_finite()) {
            v.push((
                "REPLAYGAIN_TRACK_GAIN".into(),
                format!("{:.2} dB", -18.0 - l),
            ));
        }
        if let Some(p) = self.peak.filter(|p| p.is_finite()) {
            v.push(("REPLAYGAIN_TRACK_PEAK".into(), format!("{p:.6}")));
        }
        v
    }

    /// R128_TRACK_GAIN: Q7.8 dB towards -23 LUFS (Opus).
    pub fn r128_gain(&self) -> Option<i16> {
        self.lufs
            .filter(|l| l.is_finite())
            .map(|l| ((-23.0 - l) * 256.0).round().clamp(-32768.0, 32767.0) as i16)
    }

    /// An ID3v2.4 tag (MP3): title, artist, album, ISRC (TSRC) and the
    /// ReplayGain pair as TXXX frames.
    pub fn id3v2(&self) -> Vec<u8> {
        let t = &self.track;
        let mut frames = Vec::new();
        let mut text = |id: &[u8; 4], body: Vec<u8>| {
            frames.extend_from_slice(id);
            frames.extend_from_slice(&synchsafe(body.len() as u32 + 1));
            frames.extend_from_slice(&[0, 0, 3]); // flags; UTF-8
            frames.extend_from_slice(&body);
        };
        for (id, v) in [
            (b"TIT2", &t.title),
            (b"TPE1", &t.artist),
            (b"TALB", &t.album),
            (b"TSRC", &t.isrc),
        ] {
            if let Some(v) = v {
                text(id, v.as_bytes().to_vec());
            }
        }
        for (k, v) in self
            .comments()
            .into_iter()
            .filter(|(k, _)| k.starts_with("REPLAYGAIN"))
        {
            let mut body = k.into_bytes();
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            text(b"TXXX", body);
        }
        if frames.is_empty() {
            return Vec::new();
        }
        let mut tag = b"ID3\x04\x00\x00".to_vec();
        tag.extend_from_slice(&synchsafe(frames.len() as u32));
        tag.extend_from_slice(&frames);
        tag
    }
}

/// A Vorbis-comment body (vendor, then `KEY=value` pairs, lengths little
/// endian), as OpusTags and FLAC's VORBIS_COMMENT block carry it.
pub fn comment_body(library: &str, comments: &[(String, String)]) -> Vec<u8> {
    let vendor = format!("LoopMind {} ({library})", env!("CARGO_PKG_VERSION"));
    let mut body = Vec::new();
    body.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
    body.extend_from_slice(vendor.as_bytes());
    body.extend_from_slice(&(comments.len() as u32).to_le_bytes());
    for (k, v) in comments {
        let c = format!("{k}={v}");
        body.extend_from_slice(&(c.len() as u32).to_le_bytes());
        body.extend_from_slice(c.as_bytes());
    }
    body
}

fn synchsafe(n: u32) -> [u8; 4] {
    [
        ((n >> 21) & 0x7f) as u8,
        ((n >> 14) & 0x7f) as u8,
        ((n >> 7) & 0x7f) as u8,
        (n & 0x7f) as u8,
    ]
}
