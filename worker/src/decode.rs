//! Decoding with symphonia: the container is probed from the bytes, never the
//! file name, so a text file called `.mp3` is refused for what it is.

use crate::WorkerError;
use loopmind_dsp::Audio;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::Path;
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::{MetadataOptions, MetadataRevision, StandardTagKey};
use symphonia::core::probe::Hint;

/// Tags carried from the source into the report and the master's INFO chunk.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Tags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artist: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub album: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isrc: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SourceInfo {
    /// Codec short name as symphonia knows it (pcm_s24le, flac, mp3, ...).
    pub codec: String,
    pub sample_rate_hz: u32,
    pub channels: usize,
    pub bits_per_sample: Option<u32>,
    pub duration_seconds: f64,
    pub tags: Tags,
}

fn read_tags(rev: &MetadataRevision, tags: &mut Tags) {
    for tag in rev.tags() {
        let slot = match tag.std_key {
            Some(StandardTagKey::TrackTitle) => &mut tags.title,
            Some(StandardTagKey::Artist) => &mut tags.artist,
            Some(StandardTagKey::Album) => &mut tags.album,
            Some(StandardTagKey::IdentIsrc) => &mut tags.isrc,
            _ => continue,
        };
        let v = tag.value.to_string();
        if slot.is_none() && !v.trim().is_empty() {
            *slot = Some(v.trim().to_string());
        }
    }
}

/// 10800 -> "3 h", 5400 -> "1 h 30 min", 90 -> "90 s".
fn hms(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match (s / 3600, (s % 3600) / 60) {
        (0, _) => format!("{s} s"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

fn describe(e: SymError) -> WorkerError {
    WorkerError::Decode(match e {
        SymError::Unsupported(what) => format!("unsupported format or codec ({what})"),
        SymError::DecodeError(what) => format!("corrupt data ({what})"),
        SymError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "file ends early (truncated)".to_string()
        }
        other => other.to_string(),
    })
}

/// What a file may ask of the decoder (from `[render]` settings). The
/// header's length is never trusted: buffers grow from what was decoded, and
/// decoding stops with an error at the limit.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecodeLimits {
    pub max_seconds: f64,
    pub max_rate: u32,
    pub max_channels: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        (&crate::config::RenderSettings::default()).into()
    }
}

impl From<&crate::config::RenderSettings> for DecodeLimits {
    fn from(s: &crate::config::RenderSettings) -> Self {
        Self {
            max_seconds: s.max_duration_s as f64,
            max_rate: s.max_sample_rate_hz,
            max_channels: s.max_channels as usize,
        }
    }
}

impl DecodeLimits {
    fn check_format(&self, rate: u32, channels: usize) -> Result<(), WorkerError> {
        if rate > self.max_rate {
            return Err(WorkerError::Limit {
                what: format!("sample rate {rate} Hz"),
                limit: format!("{} Hz", self.max_rate),
                setting: "render.max_sample_rate_hz",
            });
        }
        if channels > self.max_channels {
            return Err(WorkerError::Limit {
                what: format!("{channels} channels"),
                limit: self.max_channels.to_string(),
                setting: "render.max_channels",
            });
        }
        Ok(())
    }
}

/// Decodes a whole file to planar f32 under the default limits.
pub fn decode_file(path: &Path) -> Result<(Audio, SourceInfo), WorkerError> {
    decode_file_limited(path, &DecodeLimits::default())
}

/// Decodes a whole file to planar f32, refusing what exceeds `limits`.
pub fn decode_file_limited(
    path: &Path,
    limits: &DecodeLimits,
) -> Result<(Audio, SourceInfo), WorkerError> {
    let file = File::open(path).map_err(|e| WorkerError::io(path, e))?;
    let len = file.metadata().map_err(|e| WorkerError::io(path, e))?.len();
    if len == 0 {
        return Err(WorkerError::Decode("empty file (0 bytes)".into()));
    }
    let mss = MediaSourceStream::new(Box::new(file), Default::default());
    let mut probed = symphonia::default::get_probe()
        .format(
            &Hint::new(),
            mss,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|e| match e {
            SymError::Unsupported(_) | SymError::IoError(_) => WorkerError::Decode(
                "not a recognised audio file (no supported container found in its bytes)".into(),
            ),
            other => describe(other),
        })?;
    let mut tags = Tags::default();
    if let Some(rev) = probed.metadata.get().as_ref().and_then(|m| m.current()) {
        read_tags(rev, &mut tags);
    }
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| WorkerError::Decode("no audio track".into()))?
        .clone();
    let params = &track.codec_params;
    let codec = symphonia::default::get_codecs()
        .get_codec(params.codec)
        .map(|d| d.short_name.to_string())
        .unwrap_or_else(|| "unknown".into());
    let mut decoder = symphonia::default::get_codecs()
        .make(params, &DecoderOptions::default())
        .map_err(describe)?;
    // Only for the truncation check below: a header's length sizes nothing.
    let expected = params.n_frames;
    let mut rate = params.sample_rate.unwrap_or(0);
    // Refused before a packet is decoded where the container says enough.
    limits.check_format(rate, params.channels.map_or(0, |c| c.count()))?;
    let mut channels: Vec<Vec<f32>> = Vec::new();
    let mut max_frames = u64::MAX;
    let mut sample_buf: Option<SampleBuffer<f32>> = None;
    let mut bad_packets = 0usize;
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymError::ResetRequired) => break,
            Err(e) => return Err(describe(e)),
        };
        if packet.track_id() != track.id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            Err(SymError::DecodeError(_)) => {
                // One bad frame in a lossy stream is skipped, as players do;
                // many mean the file is damaged.
                bad_packets += 1;
                if bad_packets > 8 {
                    return Err(WorkerError::Decode("too many corrupt packets".into()));
                }
                continue;
            }
            Err(e) => return Err(describe(e)),
        };
        let spec = *decoded.spec();
        let nch = spec.channels.count();
        if channels.is_empty() {
            limits.check_format(spec.rate, nch)?;
            rate = spec.rate;
            max_frames = (limits.max_seconds * rate as f64) as u64;
            channels = vec![Vec::new(); nch];
        }
        if spec.rate != rate {
            return Err(WorkerError::Decode("sample rate changes mid-stream".into()));
        }
        if channels.len() != nch {
            return Err(WorkerError::Decode(
                "channel count changes mid-stream".into(),
            ));
        }
        let buf = match &mut sample_buf {
            Some(b) if b.capacity() >= decoded.capacity() * nch => b,
            _ => sample_buf.insert(SampleBuffer::new(decoded.capacity() as u64, spec)),
        };
        buf.copy_interleaved_ref(decoded);
        for frame in buf.samples().chunks_exact(nch) {
            for (c, &s) in frame.iter().enumerate() {
                channels[c].push(s);
            }
        }
        let frames = channels[0].len() as u64;
        if frames > max_frames {
            return Err(WorkerError::Limit {
                what: format!("more than {} of audio", hms(limits.max_seconds)),
                limit: hms(limits.max_seconds),
                setting: "render.max_duration_s",
            });
        }
        crate::progress::tick();
    }
    // Growth by doubling leaves up to half of each buffer unused.
    for c in &mut channels {
        c.shrink_to_fit();
    }
    let frames = channels.first().map_or(0, Vec::len) as u64;
    if let Some(n) = expected {
        // Lossless containers state their length: fewer frames means the file
        // was cut short. (Lossy streams may legitimately differ by a frame.)
        if frames + 4096 < n {
            return Err(WorkerError::Decode(format!(
                "truncated or a lying header: the header promises {n} frames, the data holds {frames}"
            )));
        }
    }
    if let Some(rev) = format.metadata().current() {
        read_tags(rev, &mut tags);
    }
    if frames == 0 || channels.is_empty() {
        return Err(WorkerError::Decode("no audio samples in the stream".into()));
    }
    let audio = Audio::new(rate, channels).map_err(WorkerError::Input)?;
    let info = SourceInfo {
        codec,
        sample_rate_hz: rate,
        channels: audio.num_channels(),
        bits_per_sample: params.bits_per_sample,
        duration_seconds: audio.seconds(),
        tags,
    };
    Ok((audio, info))
}
