use std::fmt::Display;
use std::io::ErrorKind;
use thiserror::Error;

/// What a scratch store ([`crate::store`]) or a master sink
/// ([`crate::process::master::MasterSink`]) reports when it cannot do its part: what
/// failed (a file, a stage) and why. Unlike the rest of [`DspError`] this is
/// no property of the input: the same job may well succeed later, so callers
/// treat it as a passing fault.
///
/// It keeps the `std::io::Error`'s kind and message rather than the error
/// itself: `DspError` derives `Clone` and `PartialEq` and `io::Error` is
/// neither, while the kind is what a caller may want to act on (a full disk
/// is `StorageFull`).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{what}: {reason}")]
pub struct IoFault {
    what: String,
    kind: ErrorKind,
    reason: String,
}

impl IoFault {
    /// `what` (a path, say) failed with `e`.
    pub fn io(what: impl Display, e: std::io::Error) -> Self {
        Self {
            what: what.to_string(),
            kind: e.kind(),
            reason: e.to_string(),
        }
    }

    /// `what` failed for a reason that is no `std::io::Error` (an encoder's
    /// complaint, a sink used out of order); its kind is `Other`.
    pub fn other(what: impl Display, reason: impl Display) -> Self {
        Self {
            what: what.to_string(),
            kind: ErrorKind::Other,
            reason: reason.to_string(),
        }
    }

    /// The underlying `std::io::Error`'s kind (`Other` for [`IoFault::other`]).
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// Why a buffer could not be analysed or mastered. Every variant but `Sink`
/// and `Store` (an [`IoFault`]) is a property of the input or the request, so
/// retrying the same job cannot help.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum DspError {
    #[error("no audio: the stream decoded to zero samples")]
    Empty,
    #[error("channels have different lengths")]
    RaggedChannels,
    #[error("unsupported channel count {0}: LoopMind masters mono and stereo")]
    Channels(usize),
    #[error("unsupported sample rate {0} Hz: LoopMind masters 8000 to 192000 Hz")]
    SampleRate(u32),
    #[error("non-finite sample (NaN or infinity) at {seconds:.3} s in channel {channel}")]
    NonFinite { channel: usize, seconds: f64 },
    #[error("too short: {seconds:.3} s is less than one 400 ms loudness block")]
    TooShort { seconds: f64 },
    #[error("silent: loudness below the -70 LUFS absolute gate; silence is never boosted")]
    Silent,
    #[error("target {target_lufs} LUFS needs {gain_db:.1} dB of gain, above the {cap_db} dB cap")]
    GainCap {
        target_lufs: f64,
        gain_db: f64,
        cap_db: f64,
    },
    #[error("cannot reach {target_lufs} LUFS under {ceiling_dbtp} dBTP: got {reached_lufs:.2} LUFS at the limiter's honest maximum")]
    Unreachable {
        target_lufs: f64,
        ceiling_dbtp: f64,
        reached_lufs: f64,
    },
    #[error("{field}: {reason}")]
    Document { field: String, reason: String },
    #[error("invalid setting {key}: {reason}")]
    Setting { key: String, reason: String },
    #[error("loudness meter: {0}")]
    Meter(String),
    #[error("writing the master: {0}")]
    Sink(IoFault),
    #[error("resampler: {0}")]
    Resample(String),
    /// The scratch store of a pass (its own reason names the file).
    #[error("scratch store: {0}")]
    Store(IoFault),
    /// Reading the input failed (the source keeps its own typed error).
    #[error("reading the input: {0}")]
    Source(String),
}
