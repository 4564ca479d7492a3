//! Decoding with symphonia: the container is probed from the bytes, never the
//! file name, so a text file called `.mp3` is refused for what it is.

use crate::WorkerError;
use loopmind_dsp::pipeline::Source;
use loopmind_dsp::Audio;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::Path;
use symphonia::core::audio::{AudioBuffer, Signal};
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
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
            *slot = Some(bounded_tag(v.trim()));
        }
    }
}

/// Characters of a tag kept: the file sets its length, and every master,
/// encode and report repeats it (a FLAC comment block holds 16 MiB at most).
pub const MAX_TAG_CHARS: usize = 1024;

/// A tag as every writer can take it: at most MAX_TAG_CHARS characters,
/// control characters (a NUL, which the Vorbis encoder refuses and C
/// strings end at; line breaks, which no title holds) made spaces.
fn bounded_tag(v: &str) -> String {
    v.chars()
        .take(MAX_TAG_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
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
    /// The job's disk budget in bytes (`render.disk_budget_mib`): the mix,
    /// scratch and masters ([`crate::disk`]).
    #[serde(default = "unlimited")]
    pub disk_budget: u64,
}

fn unlimited() -> u64 {
    u64::MAX
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
            disk_budget: s.disk_budget_mib.saturating_mul(1 << 20),
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

/// Decodes a whole file to planar f32, refusing what exceeds `limits`
/// (tests and tools; the render streams with [`DecodeSource`]).
pub fn decode_file_limited(
    path: &Path,
    limits: &DecodeLimits,
) -> Result<(Audio, SourceInfo), WorkerError> {
    let mut src = DecodeSource::open(path, limits)?;
    let mut channels = vec![Vec::new(); src.channels()];
    while src.next(&mut channels)? {}
    let audio = Audio::new(src.rate(), channels).map_err(WorkerError::Input)?;
    Ok((audio, src.info()))
}

/// Symphonia's decoders, and libopus for Opus (symphonia 0.5 has none).
fn codecs() -> &'static symphonia::core::codecs::CodecRegistry {
    static CODECS: std::sync::OnceLock<symphonia::core::codecs::CodecRegistry> =
        std::sync::OnceLock::new();
    CODECS.get_or_init(|| {
        let mut r = symphonia::core::codecs::CodecRegistry::new();
        symphonia::default::register_enabled_codecs(&mut r);
        r.register_all::<crate::opus_input::OpusDecoder>();
        r
    })
}

/// One read-through of a file.
struct Reader {
    format: Box<dyn FormatReader>,
    decoder: Box<dyn symphonia::core::codecs::Decoder>,
    track_id: u32,
    codec: String,
    bits: Option<u32>,
    /// The header's length: only for the truncation check, it sizes nothing.
    expected: Option<u64>,
    rate: u32,
    channels: usize,
    planar: Option<AudioBuffer<f32>>,
    bad_packets: usize,
    frames: u64,
    tags: Tags,
    done: bool,
}

impl Reader {
    fn open(path: &Path, limits: &DecodeLimits) -> Result<Self, WorkerError> {
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
                    "not a recognised audio file (no supported container found in its bytes)"
                        .into(),
                ),
                other => describe(other),
            })?;
        let mut tags = Tags::default();
        if let Some(rev) = probed.metadata.get().as_ref().and_then(|m| m.current()) {
            read_tags(rev, &mut tags);
        }
        let format = probed.format;
        let track = format
            .tracks()
            .iter()
            .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
            .ok_or_else(|| WorkerError::Decode("no audio track".into()))?
            .clone();
        let params = &track.codec_params;
        let codec = codecs()
            .get_codec(params.codec)
            .map(|d| d.short_name.to_string())
            .unwrap_or_else(|| "unknown".into());
        let decoder = codecs()
            .make(params, &DecoderOptions::default())
            .map_err(describe)?;
        let rate = params.sample_rate.unwrap_or(0);
        // Refused before a packet is decoded where the container says enough.
        limits.check_format(rate, params.channels.map_or(0, |c| c.count()))?;
        Ok(Self {
            format,
            decoder,
            track_id: track.id,
            codec,
            bits: params.bits_per_sample,
            expected: params.n_frames,
            rate,
            channels: 0,
            planar: None,
            bad_packets: 0,
            frames: 0,
            tags,
            done: false,
        })
    }

    /// Decodes the next packet of the track into its planar buffer
    /// ([`Reader::append_to`]); false at the end.
    fn next(&mut self, limits: &DecodeLimits) -> Result<bool, WorkerError> {
        if self.done {
            return Ok(false);
        }
        loop {
            let packet = match self.format.next_packet() {
                Ok(p) => p,
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return self.end()
                }
                Err(SymError::ResetRequired) => return self.end(),
                Err(e) => return Err(describe(e)),
            };
            if packet.track_id() != self.track_id {
                continue;
            }
            let decoded = match self.decoder.decode(&packet) {
                Ok(d) => d,
                Err(SymError::DecodeError(_)) => {
                    // One bad frame in a lossy stream is skipped, as players do;
                    // many mean the file is damaged.
                    self.bad_packets += 1;
                    if self.bad_packets > 8 {
                        return Err(WorkerError::Decode("too many corrupt packets".into()));
                    }
                    continue;
                }
                Err(e) => return Err(describe(e)),
            };
            let spec = *decoded.spec();
            let nch = spec.channels.count();
            if self.channels == 0 {
                limits.check_format(spec.rate, nch)?;
                self.rate = spec.rate;
                self.channels = nch;
            }
            if spec.rate != self.rate {
                return Err(WorkerError::Decode("sample rate changes mid-stream".into()));
            }
            if nch != self.channels {
                return Err(WorkerError::Decode(
                    "channel count changes mid-stream".into(),
                ));
            }
            // Planar, so each channel takes it with one copy.
            let buf = match &mut self.planar {
                Some(b) if b.capacity() == decoded.capacity() && *b.spec() == spec => b,
                _ => self.planar.insert(decoded.make_equivalent::<f32>()),
            };
            decoded.convert(buf);
            self.frames += buf.frames() as u64;
            if self.frames > (limits.max_seconds * self.rate as f64) as u64 {
                return Err(WorkerError::Limit {
                    what: format!("more than {} of audio", hms(limits.max_seconds)),
                    limit: hms(limits.max_seconds),
                    setting: "render.max_duration_s",
                });
            }
            crate::progress::tick();
            return Ok(true);
        }
    }

    /// Appends the last decoded packet to `out` (one `Vec` per channel).
    fn append_to(&self, out: &mut [Vec<f32>]) {
        if let Some(buf) = &self.planar {
            for (c, o) in out.iter_mut().enumerate() {
                o.extend_from_slice(buf.chan(c));
            }
        }
    }

    fn end(&mut self) -> Result<bool, WorkerError> {
        self.done = true;
        if let Some(n) = self.expected {
            // Lossless containers state their length: fewer frames means the
            // file was cut short. (Lossy streams may differ by a frame.)
            if self.frames + 4096 < n {
                return Err(WorkerError::Decode(format!(
                    "truncated or a lying header: the header promises {n} frames, the data holds {}",
                    self.frames
                )));
            }
        }
        if let Some(rev) = self.format.metadata().current() {
            read_tags(rev, &mut self.tags);
        }
        if self.frames == 0 || self.channels == 0 {
            return Err(WorkerError::Decode("no audio samples in the stream".into()));
        }
        Ok(false)
    }
}

/// A file decoded as it is read, as often as the render reads it through
/// (each pass decodes again: about 0.1 s per 5 minutes, where holding the
/// decoded track would cost memory in proportion to its length).
pub struct DecodeSource {
    path: std::path::PathBuf,
    limits: DecodeLimits,
    reader: Reader,
    /// Frames decoded to learn the format, handed out first.
    first: Option<Vec<Vec<f32>>>,
    /// The typed error behind the last [`DspError::Source`].
    failed: Option<WorkerError>,
    /// Frames of the last complete read-through.
    frames: Option<u64>,
    /// See [`DecodeSource::ignoring_stated_length`]; kept across rewinds.
    ignore_length: bool,
}

impl DecodeSource {
    pub fn open(path: &Path, limits: &DecodeLimits) -> Result<Self, WorkerError> {
        let (reader, first) = Self::start(path, limits)?;
        Ok(Self {
            path: path.to_path_buf(),
            limits: *limits,
            reader,
            first: Some(first),
            failed: None,
            frames: None,
            ignore_length: false,
        })
    }

    /// Reads a file LoopMind wrote itself without holding it to the length
    /// its header states: an ADTS stream has none, only an estimate from its
    /// size (a mix's header that lies is still refused).
    pub fn ignoring_stated_length(mut self) -> Self {
        self.ignore_length = true;
        self.reader.expected = None;
        self
    }

    /// A reader with its first packet decoded (the format is known then;
    /// a stream without one ends in an error here).
    fn start(path: &Path, limits: &DecodeLimits) -> Result<(Reader, Vec<Vec<f32>>), WorkerError> {
        let mut reader = Reader::open(path, limits)?;
        reader.next(limits)?;
        let mut first = vec![Vec::new(); reader.channels];
        reader.append_to(&mut first);
        Ok((reader, first))
    }

    /// Reads on; false at the end (typed errors, for callers outside the
    /// pipeline).
    pub fn next(&mut self, out: &mut [Vec<f32>]) -> Result<bool, WorkerError> {
        if let Some(first) = self.first.take() {
            for (o, f) in out.iter_mut().zip(first) {
                o.extend_from_slice(&f);
            }
            return Ok(true);
        }
        let more = self.reader.next(&self.limits)?;
        if more {
            self.reader.append_to(out);
        } else {
            self.frames = Some(self.reader.frames);
        }
        Ok(more)
    }

    /// What the file states before it is read through: its length in
    /// frames, if its header gives one (a claim, sizing nothing), its rate
    /// and its channels.
    pub fn stated(&self) -> (Option<u64>, u32, usize) {
        let r = &self.reader;
        (r.expected, r.rate, r.channels)
    }

    /// The error behind a [`DspError::Source`] the pipeline returned.
    pub fn take_error(&mut self) -> Option<WorkerError> {
        self.failed.take()
    }

    /// What is known of the file (its duration once read through).
    pub fn info(&self) -> SourceInfo {
        let r = &self.reader;
        let frames = self.frames.unwrap_or(r.frames);
        SourceInfo {
            codec: r.codec.clone(),
            sample_rate_hz: r.rate,
            channels: r.channels,
            bits_per_sample: r.bits,
            duration_seconds: frames as f64 / r.rate.max(1) as f64,
            tags: r.tags.clone(),
        }
    }

    /// Turns a pipeline error back into the typed one where it came from here.
    pub fn error(&mut self, e: loopmind_dsp::DspError) -> WorkerError {
        match (e, self.take_error()) {
            (loopmind_dsp::DspError::Source(_), Some(typed)) => typed,
            (other, _) => other.into(),
        }
    }
}

impl Source for DecodeSource {
    fn rate(&self) -> u32 {
        self.reader.rate
    }

    fn channels(&self) -> usize {
        self.reader.channels
    }

    fn rewind(&mut self) -> Result<(), loopmind_dsp::DspError> {
        if self.first.is_some() {
            // Nothing read since the reader started.
            return Ok(());
        }
        match Self::start(&self.path, &self.limits) {
            Ok((mut reader, first)) => {
                if self.ignore_length {
                    reader.expected = None;
                }
                self.reader = reader;
                self.first = Some(first);
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                self.failed = Some(e);
                Err(loopmind_dsp::DspError::Source(msg))
            }
        }
    }

    fn read(&mut self, out: &mut [Vec<f32>]) -> Result<bool, loopmind_dsp::DspError> {
        self.next(out).map_err(|e| {
            let msg = e.to_string();
            self.failed = Some(e);
            loopmind_dsp::DspError::Source(msg)
        })
    }
}

#[cfg(test)]
mod tests {
    /// A file's tag is cut to MAX_TAG_CHARS characters, on a character
    /// boundary (multi-byte text stays valid).
    #[test]
    fn a_tag_is_bounded_by_characters() {
        let long = "é".repeat(5000);
        let t = super::bounded_tag(&long);
        assert_eq!(t.chars().count(), super::MAX_TAG_CHARS);
        assert_eq!(super::bounded_tag("Song"), "Song");
        assert_eq!(super::bounded_tag("Be\0fore\nAfter"), "Be fore After");
    }
}
