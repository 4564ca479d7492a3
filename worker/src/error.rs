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
    /// A fault of LoopMind's own (a document that would not read back):
    /// the same job would meet it again.
    #[error("internal error: {0}")]
    Internal(String),
    /// The input asks for more than the settings allow.
    #[error("{what} is over the limit of {limit} ({setting})")]
    Limit {
        what: String,
        limit: String,
        setting: &'static str,
    },
}

impl WorkerError {
    pub fn action(&self) -> Action {
        match self {
            WorkerError::Decode(_)
            | WorkerError::Request(_)
            | WorkerError::Limit { .. }
            | WorkerError::Internal(_) => Action::Abort,
            WorkerError::Input(DspError::Sink(_) | DspError::Store(_)) => Action::Retry,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_to_do_next_is_truthful() {
        let io = |kind| WorkerError::io("/x", std::io::Error::from(kind));
        let limit = WorkerError::Limit {
            what: "x".into(),
            limit: "y".into(),
            setting: "render.max_duration_s",
        };
        for (e, want) in [
            (WorkerError::Decode("corrupt".into()), Action::Abort),
            (WorkerError::Request("bad".into()), Action::Abort),
            (limit, Action::Abort),
            (WorkerError::Internal("bug".into()), Action::Abort),
            (WorkerError::Input(DspError::Silent), Action::Abort),
            (
                WorkerError::Input(DspError::Sink(loopmind_dsp::error::IoFault::io(
                    "/x",
                    std::io::Error::from(std::io::ErrorKind::StorageFull),
                ))),
                Action::Retry,
            ),
            (io(std::io::ErrorKind::NotFound), Action::Abort),
            (io(std::io::ErrorKind::StorageFull), Action::Retry),
            (
                WorkerError::Encode {
                    path: "/x".into(),
                    reason: "disk".into(),
                },
                Action::Retry,
            ),
        ] {
            assert_eq!(e.action(), want, "{e}");
        }
    }
}
