//! Every render runs in a child process: the same binary, started with the
//! hidden subcommand [`CHILD_COMMAND`]. The process that owns the queue or
//! the batch never decodes a byte of a mix, so a decoder that aborts, loops
//! or asks for 100 GB costs one track, never the worker or the batch.
//!
//! The parent gives the child an address-space limit (RLIMIT_AS, the memory
//! budget), a wall-clock deadline and a stall timeout (the child reports each
//! stage and ticks while decoding), and turns any abnormal end into a
//! [`Failure`] a person can read: "ran out of its 2048 MiB memory budget
//! while decoding", "no progress for 600 s while decoding", "crashed (signal
//! 11: SIGSEGV) while rendering spotify".
//!
//! Protocol: the request is one JSON document on the child's stdin; the child
//! answers with JSON lines on stdout ([`Message`]), the last one `Done`. Its
//! stderr (logs, panic text) is passed through and its tail kept for the
//! failure's reason.

use crate::config::RenderSettings;
use crate::job::Measurement;
use crate::progress::{Note, Progress};
use crate::render::{render_masters, RenderInputs};
use crate::report::TrackReport;
use crate::{Action, WorkerError};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tracing::warn;

/// The hidden subcommand that runs one render and exits.
pub const CHILD_COMMAND: &str = "render-child";

/// What the child is asked to do.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Work {
    /// Every target of one track into `out_dir`.
    Render {
        input: PathBuf,
        track: String,
        out_dir: PathBuf,
        opts: Box<RenderInputs>,
    },
    /// An album's first pass: loudness and length only.
    Measure {
        input: PathBuf,
        limits: crate::decode::DecodeLimits,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Answer {
    Rendered(Box<TrackReport>),
    Measured(Measurement),
}

/// Why a render did not produce its answer, classified for the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    Decode,
    Input,
    Request,
    Limit,
    Io,
    Encode,
    /// A bug: the same input panics again.
    Panic,
    /// Over the memory budget: the same bytes ask for as much again.
    Budget,
    Deadline,
    Stall,
    /// Killed by a signal we did not send, or exited without an answer:
    /// tried once more, then given up.
    Crash,
}

impl FailureKind {
    /// A metrics label.
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Decode => "decode",
            FailureKind::Input => "input",
            FailureKind::Request => "request",
            FailureKind::Limit => "limit",
            FailureKind::Io => "io",
            FailureKind::Encode => "encode",
            FailureKind::Panic => "panic",
            FailureKind::Budget => "memory_budget",
            FailureKind::Deadline => "deadline",
            FailureKind::Stall => "stall",
            FailureKind::Crash => "crash",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
    pub action: Action,
}

impl From<WorkerError> for Failure {
    fn from(e: WorkerError) -> Self {
        let kind = match &e {
            WorkerError::Decode(_) => FailureKind::Decode,
            WorkerError::Input(_) => FailureKind::Input,
            WorkerError::Request(_) => FailureKind::Request,
            WorkerError::Limit { .. } => FailureKind::Limit,
            WorkerError::Io { .. } => FailureKind::Io,
            WorkerError::Encode { .. } => FailureKind::Encode,
            WorkerError::Internal(_) => FailureKind::Panic,
        };
        Failure {
            kind,
            action: e.action(),
            message: e.to_string(),
        }
    }
}

/// One line from the child: its answer, or a progress note written by the
/// render as it goes (the same line `progress` writes on its own).
#[derive(Debug, Serialize, Deserialize)]
pub enum Message {
    Done(Result<Answer, Failure>),
    #[serde(untagged)]
    Note(Note),
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    work: Work,
    log_level: String,
    log_json: bool,
}

/// How the parent runs renders.
#[derive(Clone, Debug)]
pub struct Isolation {
    /// The binary that serves [`CHILD_COMMAND`] (the running one).
    pub exe: PathBuf,
    pub limits: RenderSettings,
    /// The child's log filter and format (its stderr is passed through).
    pub log_level: String,
    pub log_json: bool,
}

impl Isolation {
    /// Renders in children of the running binary.
    pub fn new(limits: RenderSettings) -> std::io::Result<Self> {
        Ok(Self {
            exe: std::env::current_exe()?,
            limits,
            log_level: std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            log_json: false,
        })
    }

    /// Runs `work` in a child. A crash gets one more try (a machine can
    /// have a bad moment); the second on the same bytes is final. The
    /// deadline covers both tries.
    /// The child's progress notes go to `progress`.
    pub async fn run(&self, work: &Work, progress: &Progress) -> Result<Answer, Failure> {
        let started = Instant::now();
        match self.run_once(work, started, progress).await {
            Err(f) if f.kind == FailureKind::Crash => {
                warn!(error = %f.message, "render process crashed; trying once more");
                self.run_once(work, started, progress)
                    .await
                    .map_err(|mut f| {
                        if f.kind == FailureKind::Crash {
                            f.action = Action::Abort;
                            f.message.push_str(" (twice: not retried again)");
                        }
                        f
                    })
            }
            other => other,
        }
    }

    async fn run_once(
        &self,
        work: &Work,
        started: Instant,
        progress: &Progress,
    ) -> Result<Answer, Failure> {
        let mut child = self.spawn()?;
        let request = serde_json::to_vec(&Request {
            work: work.clone(),
            log_level: self.log_level.clone(),
            log_json: self.log_json,
        })
        .expect("requests serialise");
        let mut stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        // Pass the child's log through; keep its last lines for the reason.
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let logger = tokio::spawn(pass_through(stderr, tail.clone()));
        let writer = tokio::spawn(async move {
            // A child that dies at once closes its stdin: that is reported
            // by its exit, not here.
            let _ = stdin.write_all(&request).await;
        });
        let deadline = started + Duration::from_secs(self.limits.deadline_s);
        let heard = self.listen(&mut child, stdout, deadline, progress).await;
        let status = exit_status(&mut child, deadline).await;
        writer.abort();
        let _ = tokio::time::timeout(Duration::from_secs(5), logger).await;
        if let Some(answer) = heard.done {
            return answer;
        }
        let tail: Vec<String> = tail.lock().expect("tail").iter().cloned().collect();
        Err(self.classify(heard.stopped, status, &heard.stage, &tail))
    }

    /// Starts a render child of the running binary, its stdio piped, its
    /// address space limited to the memory budget.
    fn spawn(&self) -> Result<tokio::process::Child, Failure> {
        let budget = self.limits.memory_budget_mib.saturating_mul(1 << 20);
        let disk = self.limits.disk_budget_mib.saturating_mul(1 << 20);
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg(CHILD_COMMAND)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            // Nothing of the parent's environment: the store's secret and
            // the broker's password stay with the process that needs them.
            .env_clear()
            // One malloc arena: a second thread's arena would reserve 64 MiB
            // of the budget for nothing.
            .env("MALLOC_ARENA_MAX", "1")
            .kill_on_drop(true);
        // SAFETY: setrlimit is async-signal-safe and touches no parent state.
        unsafe {
            cmd.pre_exec(move || {
                limit(libc::RLIMIT_AS, budget)?;
                // No core file of a crashed decoder (a mix's worth of memory
                // on the worker's disk); a handful of files is all it opens.
                limit(libc::RLIMIT_CORE, 0)?;
                limit(libc::RLIMIT_NOFILE, CHILD_FILES)?;
                // No one file past the job's disk budget, whatever the count
                // of `disk` missed (SIGXFSZ ends the child).
                limit(libc::RLIMIT_FSIZE, disk)
            });
        }
        cmd.spawn().map_err(|e| Failure {
            kind: FailureKind::Io,
            message: format!(
                "cannot start a render process ({}): {e}",
                self.exe.display()
            ),
            action: Action::Retry,
        })
    }

    /// Reads the child's stdout until it closes, or stops the child at the
    /// deadline or when it goes quiet for `render.stall_s`.
    async fn listen(
        &self,
        child: &mut tokio::process::Child,
        stdout: tokio::process::ChildStdout,
        deadline: Instant,
        progress: &Progress,
    ) -> Heard {
        let stall = Duration::from_secs(self.limits.stall_s);
        let mut lines = BufReader::new(stdout);
        let mut line = Vec::new();
        let (mut stage, mut last, mut done) = ("starting".to_string(), Instant::now(), None);
        let stopped = loop {
            let wake = deadline.min(last + stall);
            tokio::select! {
                read = read_line(&mut lines, &mut line, MAX_CHILD_LINE) => match read {
                    Ok(true) => {
                        last = Instant::now();
                        let l = String::from_utf8_lossy(&line);
                        match serde_json::from_str::<Message>(&l) {
                            Ok(Message::Note(Note::Stage(s))) => stage = s,
                            Ok(Message::Note(Note::Tick)) => {}
                            Ok(Message::Note(Note::Progress(f))) => progress.set(f),
                            Ok(Message::Done(r)) => done = Some(r),
                            Err(_) => warn!(line = %l.chars().take(200).collect::<String>(), "render process wrote an unknown line"),
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                        let _ = child.start_kill();
                        warn!(error = %e, "render process wrote a line without end; stopped");
                        break None;
                    }
                    _ => break None,
                },
                _ = tokio::time::sleep_until(wake.into()) => {
                    let _ = child.start_kill();
                    break Some(if Instant::now() >= deadline {
                        FailureKind::Deadline
                    } else {
                        FailureKind::Stall
                    });
                }
            }
        };
        Heard {
            stage,
            done,
            stopped,
        }
    }

    /// Why a child that gave no answer ended.
    fn classify(
        &self,
        stopped: Option<FailureKind>,
        status: Option<std::process::ExitStatus>,
        stage: &str,
        tail: &[String],
    ) -> Failure {
        use std::os::unix::process::ExitStatusExt;
        let (kind, message) = match stopped {
            Some(FailureKind::Deadline) => (
                FailureKind::Deadline,
                format!(
                    "took longer than its {} s deadline (render.deadline_s) while {stage}",
                    self.limits.deadline_s
                ),
            ),
            Some(_) => (
                FailureKind::Stall,
                format!(
                    "no progress for {} s (render.stall_s) while {stage}",
                    self.limits.stall_s
                ),
            ),
            None => {
                let signal = status.and_then(|s| s.signal());
                let out_of_memory = tail.iter().any(|l| l.contains("memory allocation of"));
                match signal {
                    Some(libc::SIGABRT) if out_of_memory => (
                        FailureKind::Budget,
                        format!(
                            "ran out of its {} MiB memory budget (render.memory_budget_mib) while {stage}",
                            self.limits.memory_budget_mib
                        ),
                    ),
                    Some(libc::SIGXFSZ) => (
                        FailureKind::Limit,
                        format!(
                            "wrote a file over the job's disk budget of {} MiB (render.disk_budget_mib) while {stage}",
                            self.limits.disk_budget_mib
                        ),
                    ),
                    Some(libc::SIGKILL) => (
                        FailureKind::Crash,
                        format!("killed (signal 9: SIGKILL, as the system's out-of-memory killer does) while {stage}"),
                    ),
                    Some(n) => (
                        FailureKind::Crash,
                        format!("crashed (signal {n}: {}) while {stage}", signal_name(n)),
                    ),
                    None => (
                        FailureKind::Crash,
                        format!(
                            "render process ended without an answer ({}) while {stage}{}",
                            status.map_or("status unknown".into(), |s| s.to_string()),
                            tail.last().map_or(String::new(), |l| format!(": {l}"))
                        ),
                    ),
                }
            }
        };
        let action = if kind == FailureKind::Crash {
            Action::Retry
        } else {
            Action::Abort
        };
        Failure {
            kind,
            message,
            action,
        }
    }
}

/// What a child said before its stdout closed: the stage it last reported,
/// its answer if it gave one, and why it was stopped if it was.
struct Heard {
    stage: String,
    done: Option<Result<Answer, Failure>>,
    stopped: Option<FailureKind>,
}

/// The child's exit status: its stdout closed, so it is ending; it gets
/// until the deadline (and a second), then is killed.
async fn exit_status(
    child: &mut tokio::process::Child,
    deadline: Instant,
) -> Option<std::process::ExitStatus> {
    let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
    match tokio::time::timeout(left, child.wait()).await {
        Ok(s) => s.ok(),
        Err(_) => {
            let _ = child.kill().await;
            child.wait().await.ok()
        }
    }
}

fn signal_name(n: i32) -> &'static str {
    match n {
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGXCPU => "SIGXCPU",
        _ => "signal",
    }
}

/// Open files a render child may hold: its stdio, the mix, the reference,
/// a master and encoder outputs per target, spill files; far under this.
const CHILD_FILES: u64 = 256;

/// The most one line of the child's stdout may hold (a report is far less):
/// a child that writes without end is stopped, not buffered.
const MAX_CHILD_LINE: usize = 16 << 20;

/// Sets one resource limit, soft and hard, for the process calling it.
fn limit(resource: libc::__rlimit_resource_t, value: u64) -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: value as libc::rlim_t,
        rlim_max: value as libc::rlim_t,
    };
    // SAFETY: a plain system call on a stack value.
    if unsafe { libc::setrlimit(resource, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One line of `r` into `line` (without its newline), of at most `max`
/// bytes: false at the end, InvalidData past the limit (never buffered).
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<bool> {
    line.clear();
    let n = (&mut *r)
        .take(max as u64 + 1)
        .read_until(b'\n', line)
        .await?;
    if n == 0 {
        return Ok(false);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if line.len() > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a line over {max} bytes"),
        ));
    }
    Ok(true)
}

/// The most of one stderr line of the child kept: the rest is cut.
const MAX_LOG_LINE: usize = 8 << 10;

/// Lines of the child's stderr to our stderr; the last few kept.
async fn pass_through(stderr: tokio::process::ChildStderr, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut r = BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        let l = match read_line(&mut r, &mut buf, MAX_LOG_LINE).await {
            Ok(true) => String::from_utf8_lossy(&buf).into_owned(),
            // A line without end: cut where it is, the rest read as a new line.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                String::from_utf8_lossy(&buf[..MAX_LOG_LINE]).into_owned() + " [cut]"
            }
            _ => break,
        };
        eprintln!("{l}");
        let mut t = tail.lock().expect("tail");
        if t.len() == 20 {
            t.pop_front();
        }
        t.push_back(l);
    }
}

/// The child's side: reads the request from stdin, reports stages on
/// stdout, answers, and returns the exit code. `init_logs(level, json)` sets
/// up its log on stderr.
pub fn child_main(init_logs: impl FnOnce(&str, bool)) -> i32 {
    use std::io::Read;
    let mut body = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut body) {
        eprintln!("render child: cannot read its request: {e}");
        return 2;
    }
    let req: Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("render child: bad request: {e}");
            return 2;
        }
    };
    init_logs(&req.log_level, req.log_json);
    crate::progress::report_to_stdout();
    // The panic's text becomes the failure's reason.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("render child: {info}");
        *PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some(info.to_string());
    }));
    let answer = std::panic::catch_unwind(|| run_work(req.work)).unwrap_or_else(|_| {
        let what = PANIC
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_default();
        Err(Failure {
            kind: FailureKind::Panic,
            message: format!(
                "internal error (panic) while {}: {what}",
                crate::progress::current()
            ),
            action: Action::Abort,
        })
    });
    crate::progress::send(&Message::Done(answer));
    0
}

static PANIC: Mutex<Option<String>> = Mutex::new(None);

fn file_size(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

fn run_work(work: Work) -> Result<Answer, Failure> {
    match work {
        Work::Render {
            input,
            track,
            out_dir,
            opts,
        } => {
            crate::disk::start(opts.limits.disk_budget, file_size(&input));
            render_masters(&input, &track, &out_dir, &opts)
                .map(|r| Answer::Rendered(Box::new(r)))
                // Whatever a writer said when it hit the budget, the budget
                // is the reason (final, not worth a retry).
                .map_err(|e| crate::disk::exceeded().unwrap_or(e))
                .map_err(Failure::from)
        }
        Work::Measure { input, limits } => measure(&input, &limits)
            .map(Answer::Measured)
            .map_err(Failure::from),
    }
}

fn measure(
    input: &std::path::Path,
    limits: &crate::decode::DecodeLimits,
) -> Result<Measurement, WorkerError> {
    use loopmind_dsp::pipeline::{for_each_checked_block, Source, BLOCK};
    crate::progress::stage("measuring");
    // Streamed: memory does not grow with the track.
    let mut src = crate::decode::DecodeSource::open(input, limits)?;
    let (rate, nch) = (src.rate(), src.channels());
    let mut meter = loopmind_dsp::measure::bs1770::BlockMeter::new(nch, rate);
    let frames =
        for_each_checked_block(&mut src, BLOCK, |p| meter.add(p)).map_err(|e| src.error(e))?;
    let (integrated_lufs, _) = meter.loudness();
    Ok(Measurement {
        integrated_lufs: loopmind_dsp::measure::bs1770::audible(integrated_lufs)?,
        duration_seconds: frames as f64 / rate as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn iso() -> Isolation {
        Isolation {
            exe: "/nonexistent".into(),
            limits: RenderSettings::default(),
            log_level: "warn".into(),
            log_json: false,
        }
    }

    #[test]
    fn abnormal_ends_become_reasons_and_actions() {
        let signalled = |n| Some(std::process::ExitStatus::from_raw(n));
        let oom = vec!["memory allocation of 8589934592 bytes failed".to_string()];
        let cases = [
            (
                None,
                signalled(libc::SIGABRT),
                oom.clone(),
                FailureKind::Budget,
                Action::Abort,
                "ran out of its 2048 MiB memory budget (render.memory_budget_mib) while decoding",
            ),
            (
                None,
                signalled(libc::SIGABRT),
                vec![],
                FailureKind::Crash,
                Action::Retry,
                "crashed (signal 6: SIGABRT) while decoding",
            ),
            (
                None,
                signalled(libc::SIGSEGV),
                vec![],
                FailureKind::Crash,
                Action::Retry,
                "crashed (signal 11: SIGSEGV) while decoding",
            ),
            (
                None,
                signalled(libc::SIGKILL),
                vec![],
                FailureKind::Crash,
                Action::Retry,
                "killed (signal 9",
            ),
            (
                Some(FailureKind::Deadline),
                signalled(libc::SIGKILL),
                vec![],
                FailureKind::Deadline,
                Action::Abort,
                "took longer than its 3600 s deadline (render.deadline_s) while decoding",
            ),
            (
                Some(FailureKind::Stall),
                signalled(libc::SIGKILL),
                vec![],
                FailureKind::Stall,
                Action::Abort,
                "no progress for 600 s (render.stall_s) while decoding",
            ),
            // Exit code 3 without an answer.
            (
                None,
                Some(std::process::ExitStatus::from_raw(3 << 8)),
                vec!["boom".into()],
                FailureKind::Crash,
                Action::Retry,
                "ended without an answer (exit status: 3) while decoding: boom",
            ),
        ];
        for (stopped, status, tail, kind, action, msg) in cases {
            let f = iso().classify(stopped, status, "decoding", &tail);
            assert_eq!((f.kind, f.action), (kind, action), "{}", f.message);
            assert!(f.message.contains(msg), "{} / {msg}", f.message);
        }
    }

    #[tokio::test]
    async fn a_missing_render_binary_is_worth_a_retry() {
        let work = Work::Measure {
            input: "/x".into(),
            limits: Default::default(),
        };
        let f = iso().run(&work, &Progress::none()).await.unwrap_err();
        assert_eq!(
            (f.kind, f.action),
            (FailureKind::Io, Action::Retry),
            "{}",
            f.message
        );
    }
}
