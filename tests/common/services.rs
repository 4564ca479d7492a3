//! The real services for the distributed tests: RabbitMQ (started if down)
//! and a single-node Garage (tests/services/garage.sh), plus a cluster of
//! real `loopmind` processes on a queue of its own.
#![allow(dead_code)]

use loopmind_worker::config::{StoreKind, StoreSettings};
use loopmind_worker::s3::S3Store;
use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Starts RabbitMQ if it does not answer, and waits for it.
pub fn ensure_rabbitmq() {
    let up = || {
        TcpStream::connect_timeout(&"127.0.0.1:5672".parse().unwrap(), Duration::from_secs(1))
            .is_ok()
    };
    if up() {
        return;
    }
    let _ = Command::new("rabbitmq-server").arg("-detached").status();
    let _ = Command::new("rabbitmqctl").arg("start_app").status();
    let t = Instant::now();
    while !up() {
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "RabbitMQ did not start"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Garage's settings as environment variables (starting it if needed); also
/// set in this process so the test can use the store directly.
pub fn garage_env() -> Vec<(String, String)> {
    let out = Command::new("bash")
        .arg(repo().join("tests/services/garage.sh"))
        .output()
        .expect("run tests/services/garage.sh");
    assert!(
        out.status.success(),
        "garage.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vars: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in &vars {
        std::env::set_var(k, v);
    }
    vars
}

fn var(vars: &[(String, String)], k: &str) -> String {
    vars.iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.clone())
        .unwrap()
}

pub async fn garage_store(vars: &[(String, String)]) -> S3Store {
    let s = StoreSettings {
        kind: StoreKind::S3,
        bucket: var(vars, "LOOPMIND_STORE__BUCKET"),
        endpoint: var(vars, "LOOPMIND_STORE__ENDPOINT"),
        region: var(vars, "LOOPMIND_STORE__REGION"),
        path_style: true,
        ..Default::default()
    };
    S3Store::new(&s).await.unwrap()
}

/// `loopmind` processes sharing a jobs queue no other test uses.
pub struct Cluster {
    pub env: Vec<(String, String)>,
    pub jobs_queue: String,
    pub dir: tempfile::TempDir,
    pub workers: Vec<Child>,
    pub catalogs: Vec<String>,
}

impl Cluster {
    pub fn new(tag: &str, extra: &[(&str, &str)]) -> Self {
        ensure_rabbitmq();
        let mut env = garage_env();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let jobs_queue = format!("loopmind.jobs.test-{tag}-{nanos}");
        let dir = tempfile::tempdir().unwrap();
        env.push(("LOOPMIND_QUEUE__JOBS".into(), jobs_queue.clone()));
        env.push((
            "LOOPMIND_WORKER__SCRATCH".into(),
            dir.path().join("scratch").display().to_string(),
        ));
        env.push(("LOOPMIND_LOG__LEVEL".into(), "info".into()));
        // JSON lines: tests wait on events by name and read their fields,
        // never on a substring of a log line.
        env.push(("LOOPMIND_LOG__FORMAT".into(), "json".into()));
        // Several workers on one machine: each picks a free metrics port.
        env.push(("LOOPMIND_WORKER__METRICS_PORT".into(), "0".into()));
        for (k, v) in extra {
            env.push((k.to_string(), v.to_string()));
        }
        Self {
            env,
            jobs_queue,
            dir,
            workers: Vec::new(),
            catalogs: Vec::new(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_loopmind"));
        c.args(args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    pub fn worker_log(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("worker-{i}.log"))
    }

    /// Starts a worker whose logs go to `worker_log(i)`.
    pub fn spawn_worker(&mut self) -> usize {
        let i = self.workers.len();
        let log = std::fs::File::create(self.worker_log(i)).unwrap();
        let child = self
            .command(&["worker"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start worker");
        self.workers.push(child);
        i
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.worker_log(i)).unwrap_or_default()
    }

    /// Worker `i`'s events so far: one JSON object per log line, its
    /// `message` naming the event, its other keys the event's facts.
    pub fn events(&self, i: usize) -> Vec<serde_json::Value> {
        self.log(i)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// How many `event`s worker `i` has logged (the message exactly).
    pub fn count(&self, i: usize, event: &str) -> usize {
        self.events(i)
            .iter()
            .filter(|e| e["message"] == event)
            .count()
    }

    /// Waits until worker `i` has logged `event` `times` times.
    pub fn wait_event(&self, i: usize, event: &str, times: usize, limit: Duration) {
        let t = Instant::now();
        while self.count(i, event) < times {
            assert!(
                t.elapsed() < limit,
                "worker {i} never logged the event '{event}':\n{}",
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until worker `i` has a render child running (a job is being
    /// rendered, not only taken), by the process table.
    pub fn wait_rendering(&self, i: usize, limit: Duration) {
        let parent = self.workers[i].id().to_string();
        let t = Instant::now();
        while !render_child_of(&parent) {
            assert!(
                t.elapsed() < limit,
                "worker {i} started no render:\n{}",
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the coordinator on a manifest.
    pub fn spawn_coordinator(&mut self, manifest: &Path, catalog: &str) -> Child {
        self.catalogs.push(catalog.to_string());
        self.command(&["coordinator", "--catalog", manifest.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start coordinator")
    }

    pub fn kill9(&mut self, i: usize) {
        self.workers[i].kill().unwrap();
        self.workers[i].wait().unwrap();
    }

    pub fn sigterm(&mut self, i: usize) {
        let st = Command::new("kill")
            .args(["-TERM", &self.workers[i].id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Waits for worker `i` to exit; on time out, fails with its log.
    pub fn wait_worker(&mut self, i: usize, limit: Duration) -> ExitStatus {
        match poll_child(&mut self.workers[i], limit) {
            Some(st) => st,
            None => {
                let _ = self.workers[i].kill();
                panic!(
                    "worker {i} did not exit within {limit:?}; its log:\n{}",
                    self.log(i)
                );
            }
        }
    }
}

/// Waits for a child with a limit; returns (status, stdout, stderr).
pub fn finish(mut child: Child, limit: Duration) -> (ExitStatus, String, String) {
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let h1 = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).ok();
        s
    });
    let h2 = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).ok();
        s
    });
    let st = wait_child(&mut child, limit);
    (st, h1.join().unwrap(), h2.join().unwrap())
}

fn wait_child(child: &mut Child, limit: Duration) -> ExitStatus {
    poll_child(child, limit).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("process {} did not finish within {limit:?}", child.id())
    })
}

/// The child's exit status, or None if it is still running after `limit`.
fn poll_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if t.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
        // Leave the shared broker as we found it.
        let mut queues = vec![self.jobs_queue.clone()];
        for c in &self.catalogs {
            queues.push(format!("loopmind.results.{c}"));
            queues.push(format!("loopmind.dead.{c}"));
        }
        for q in queues {
            let _ = Command::new("rabbitmqctl")
                .args(["delete_queue", &q])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// One runtime per test: the S3 client's connections belong to it.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

impl Cluster {
    /// Where worker `i` serves /metrics and /healthz (its event says).
    pub fn metrics_addr(&self, i: usize) -> String {
        let event = "serving /healthz and /metrics";
        self.wait_event(i, event, 1, Duration::from_secs(30));
        let events = self.events(i);
        let e = events.iter().find(|e| e["message"] == event).unwrap();
        let addr = e["addr"].as_str().expect("the address it serves on");
        let port = addr.rsplit(':').next().unwrap();
        format!("127.0.0.1:{port}")
    }
}

/// A plain HTTP GET: (status code, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::Write;
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |x| x.1).to_string();
    (status, body)
}

/// A counter's value in a Prometheus text page (0 if absent).
pub fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Whether a `loopmind render-child` whose parent is `parent` runs now.
fn render_child_of(parent: &str) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|p| {
        let stat = std::fs::read_to_string(p.path().join("stat")).unwrap_or_default();
        let cmd = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        // stat: "pid (comm) state ppid ..."; comm may hold spaces, so read
        // after its closing parenthesis.
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').nth(1));
        ppid == Some(parent) && cmd.split(|b| *b == 0).any(|a| a == b"render-child")
    })
}
