use loopmind_dsp::DspError;
use std::path::PathBuf;
use thiserror::Error;

/// What the caller should do with a failed job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The input itself is unusable: retrying gives the same answer.
    Abort,
    /// Something around the input failed (disk, network): try again later.
    Retry,
}

#[derive(Debug, Error)]
pub enum WorkerError {
    #[error("cannot decode: {0}")]
    Decode(String),
    #[error("{0}")]
    Input(DspError),
    #[error("invalid request: {0}")]
    Request(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}: {reason}")]
    Encode { path: PathBuf, reason: String },
}

impl WorkerError {
    pub fn action(&self) -> Action {
        match self {
            WorkerError::Decode(_) | WorkerError::Request(_) => Action::Abort,
            WorkerError::Input(DspError::Sink(_)) => Action::Retry,
            WorkerError::Input(_) => Action::Abort,
            WorkerError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Action::Abort
            }
            WorkerError::Io { .. } | WorkerError::Encode { .. } => Action::Retry,
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        WorkerError::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<DspError> for WorkerError {
    fn from(e: DspError) -> Self {
        WorkerError::Input(e)
    }
}
