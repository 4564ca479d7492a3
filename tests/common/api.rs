//! The job service as a label's backend meets it: a real `loopmind serve`
//! process (SQLite in its own data folder, or a PostgreSQL database made for
//! the test) and plain HTTP calls.
#![allow(dead_code)]

use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `loopmind serve` and its data folder.
pub struct Service {
    pub data: tempfile::TempDir,
    pub env: Vec<(String, String)>,
    child: Option<Child>,
    pub base: String,
    /// A PostgreSQL database made for this service (dropped with it).
    pg_db: Option<String>,
    starts: usize,
}

/// Which database the service keeps its state in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Database {
    Sqlite,
    Postgres,
}

impl Service {
    pub fn start(db: Database, settings: &[(&str, &str)]) -> Service {
        let mut env: Vec<(String, String)> = settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.push(("LOOPMIND_LOG__FORMAT".into(), "json".into()));
        let pg_db = (db == Database::Postgres).then(|| {
            let name = format!(
                "loopmind_test_{}",
                std::process::id() as u128 * 1_000_000 + nanos()
            );
            psql(&format!("CREATE DATABASE {name}"));
            env.push((
                "LOOPMIND_SERVICE__DATABASE_URL".into(),
                format!("postgres://postgres@127.0.0.1:5432/{name}"),
            ));
            name
        });
        let mut s = Service {
            data: tempfile::tempdir().unwrap(),
            env,
            child: None,
            base: String::new(),
            pg_db,
            starts: 0,
        };
        s.restart();
        s
    }

    /// Another `serve` on the same database (its own data folder), as a
    /// second replica behind a load balancer would be.
    pub fn replica(&self) -> Service {
        assert!(self.pg_db.is_some(), "replicas share a PostgreSQL database");
        let mut s = Service {
            data: tempfile::tempdir().unwrap(),
            env: self.env.clone(),
            child: None,
            base: String::new(),
            // Dropped by the first.
            pg_db: None,
            starts: 0,
        };
        s.restart();
        s
    }

    /// Another `serve` with this one's settings (on its data folder, or on
    /// a new one): its stderr if it exited within 30 s, None if it ran.
    pub fn serve_beside(&self, same_data: bool) -> Option<String> {
        let other = tempfile::tempdir().unwrap();
        let mut c = Command::new(env!("CARGO_BIN_EXE_loopmind"));
        c.args(["serve", "--listen", "127.0.0.1:0", "--data"]);
        match same_data {
            true => c.arg(self.data.path().join("data")),
            false => c.arg(other.path()),
        };
        for (k, v) in &self.env {
            c.env(k, v);
        }
        let mut child = c
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if child.try_wait().unwrap().is_some() {
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                return Some(err);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_loopmind"));
        c.args(args);
        c.arg("--data").arg(self.data.path().join("data"));
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    pub fn log_path(&self, start: usize) -> PathBuf {
        self.data.path().join(format!("serve-{start}.log"))
    }

    /// The current process's log (one JSON object per line).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path(self.starts)).unwrap_or_default()
    }

    /// Starts `serve` (again) on a port of its choosing; waits until it says
    /// where it listens.
    pub fn restart(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.log_path(self.starts)).unwrap();
        let child = self
            .command(&["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start loopmind serve");
        self.child = Some(child);
        let t = Instant::now();
        loop {
            let addr = self.log().lines().find_map(|l| {
                let e: Value = serde_json::from_str(l).ok()?;
                (e["message"] == "serving the job API")
                    .then(|| e["addr"].as_str().map(String::from))?
            });
            if let Some(a) = addr {
                self.base = format!("http://{a}");
                return;
            }
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            assert!(exited.is_none(), "serve exited: {exited:?}\n{}", self.log());
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "serve never listened:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// `loopmind keys create`: the key it prints.
    pub fn key(&self, name: &str, tenant: Option<&str>, scope: &str) -> String {
        let mut args = vec!["keys", "create", "--name", name, "--scope", scope];
        if let Some(t) = tenant {
            args.extend(["--tenant", t]);
        }
        let out = self.command(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill9();
        if let Some(db) = &self.pg_db {
            psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
        }
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000
}

fn psql(sql: &str) {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .expect("psql (PostgreSQL's client) must be installed");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One HTTP call: (status, JSON body or Null).
pub fn call(
    method: &str,
    url: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, Value) {
    let mut r = ureq::request(method, url).timeout(Duration::from_secs(30));
    if let Some(k) = key {
        r = r.set("Authorization", &format!("Bearer {k}"));
    }
    for (h, v) in headers {
        r = r.set(h, v);
    }
    let res = match body {
        Some(b) => r.set("Content-Type", "application/json").send_string(b),
        None => r.call(),
    };
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A GET answered in text: (status, its Retry-After, the body).
pub fn get_text(url: &str, key: Option<&str>) -> (u16, Option<String>, String) {
    let mut r = ureq::get(url).timeout(Duration::from_secs(30));
    if let Some(k) = key {
        r = r.set("Authorization", &format!("Bearer {k}"));
    }
    let resp = match r.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {url}: {e}"),
    };
    let retry = resp.header("Retry-After").map(String::from);
    (resp.status(), retry, resp.into_string().unwrap_or_default())
}

/// PUT of a file's bytes to a (signed) URL: (status, JSON body).
pub fn put_file(url: &str, file: &Path) -> (u16, Value) {
    let f = std::fs::File::open(file).unwrap();
    let len = f.metadata().unwrap().len();
    let res = ureq::put(url)
        .set("Content-Length", &len.to_string())
        .send(f);
    let resp = match res {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("PUT {url}: {e}"),
    };
    let status = resp.status();
    (
        status,
        serde_json::from_str(&resp.into_string().unwrap_or_default()).unwrap_or(Value::Null),
    )
}

/// GET of a URL into a file.
pub fn download(url: &str, to: &Path) {
    let resp = ureq::get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let mut bytes = Vec::new();
    resp.into_reader().read_to_end(&mut bytes).unwrap();
    std::fs::write(to, bytes).unwrap();
}

/// A PUT that says its length and `Expect: 100-continue`, sending the body
/// only if the server asks for it: the status line's code, and whether
/// the body was sent.
pub fn put_expecting(url: &str, len: usize) -> (u16, bool) {
    use std::io::Write;
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "PUT /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len}\r\nExpect: 100-continue\r\n\r\n").unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    let code = |h: &str| h.split_whitespace().nth(1).unwrap().parse::<u16>().unwrap();
    if code(&head) != 100 {
        return (code(&head), false);
    }
    s.write_all(&vec![0u8; len]).unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    (code(&text), true)
}

/// A PUT of `len` zero bytes in 64 KiB chunks with no length said
/// (`Transfer-Encoding: chunked`), stopping when the server stops reading:
/// the status code it answered.
pub fn put_chunked(url: &str, len: usize) -> u16 {
    use std::io::Write;
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // The answer is read as it comes: a server that stops reading may
    // reset the connection, and what it said before would be lost.
    let mut r = s.try_clone().unwrap();
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&bytes).to_string()
    });
    write!(s, "PUT /{path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").unwrap();
    let chunk = vec![0u8; 65_536];
    let mut sent = 0;
    while sent < len {
        let n = chunk.len().min(len - sent);
        let wrote = write!(s, "{n:x}\r\n")
            .and_then(|_| s.write_all(&chunk[..n]))
            .and_then(|_| s.write_all(b"\r\n"));
        if wrote.is_err() {
            break;
        }
        sent += n;
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let text = reader.join().unwrap();
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"))
}

/// A client following `GET /v1/events`: the events' data, as they come.
pub struct Events {
    seen: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl Events {
    pub fn follow(base: &str, key: &str) -> Events {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(600))
            .build();
        let resp = agent
            .get(&format!("{base}/v1/events"))
            .set("Authorization", &format!("Bearer {key}"))
            .call()
            .expect("GET /v1/events");
        assert_eq!(resp.header("content-type"), Some("text/event-stream"));
        let sink = seen.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(resp.into_reader()).lines() {
                let Ok(line) = line else { return };
                if let Some(data) = line.strip_prefix("data: ") {
                    if let Ok(v) = serde_json::from_str(data) {
                        sink.lock().unwrap().push(v);
                    }
                }
            }
        });
        Events { seen }
    }

    pub fn all(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }

    /// The statuses job `id` went through, waiting until it reached `last`.
    pub fn statuses_until(&self, id: &str, last: &str, limit: Duration) -> Vec<String> {
        let t = Instant::now();
        loop {
            let of: Vec<String> = self
                .all()
                .iter()
                .filter(|e| e["job_id"] == id)
                .filter_map(|e| e["status"].as_str().map(String::from))
                .collect();
            if of.last().map(String::as_str) == Some(last) {
                return of;
            }
            assert!(t.elapsed() < limit, "job {id}: events {of:?}, never {last}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A webhook endpoint on loopback: records every POST (its headers,
/// lower-cased, and body); answers 500 to the first `fail_first`, 204 after.
pub struct Receiver {
    pub url: String,
    got: std::sync::Arc<std::sync::Mutex<Vec<(Vec<(String, String)>, String)>>>,
}

impl Receiver {
    pub fn start(fail_first: usize) -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hooks/loopmind", listener.local_addr().unwrap());
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = got.clone();
        std::thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                let Ok(mut conn) = conn else { continue };
                let Some(req) = read_request(&mut conn) else {
                    continue;
                };
                sink.lock().unwrap().push(req);
                let status = if n < fail_first {
                    "500 Internal Server Error"
                } else {
                    "204 No Content"
                };
                use std::io::Write;
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Receiver { url, got }
    }

    pub fn requests(&self) -> Vec<(Vec<(String, String)>, String)> {
        self.got.lock().unwrap().clone()
    }
}

fn read_request(conn: &mut std::net::TcpStream) -> Option<(Vec<(String, String)>, String)> {
    use std::io::BufRead;
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut r = std::io::BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")?
        .1
        .parse()
        .ok()?;
    let mut body = vec![0u8; len];
    std::io::Read::read_exact(&mut r, &mut body).ok()?;
    Some((headers, String::from_utf8(body).ok()?))
}

/// The service's own contract (`GET /v1/openapi.json`), which answers are
/// held to.
pub struct Contract {
    pub doc: Value,
}

impl Contract {
    pub fn fetch(svc: &Service) -> Contract {
        let (st, doc) = call("GET", &svc.url("/v1/openapi.json"), None, &[], None);
        assert_eq!(st, 200, "{doc}");
        assert!(
            doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
            "{doc}"
        );
        Contract { doc }
    }

    /// Fails the test when `v` is not what the contract's `schema` says.
    pub fn check(&self, schema: &str, v: &Value) {
        let mut root = serde_json::json!({"$ref": format!("#/components/schemas/{schema}")});
        root["components"] = self.doc["components"].clone();
        assert!(
            self.doc["components"]["schemas"].get(schema).is_some(),
            "no schema {schema} in the contract"
        );
        let validator = jsonschema::validator_for(&root).expect("the contract's schemas compile");
        let errors: Vec<String> = validator
            .iter_errors(v)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        assert!(errors.is_empty(), "not a {schema}: {errors:?}\n{v}");
    }

    /// Every (method, path) the contract describes, `GET /v1/jobs/{id}`.
    pub fn operations(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (path, item) in self.doc["paths"].as_object().expect("paths") {
            for m in item.as_object().unwrap().keys() {
                out.push(format!("{} {path}", m.to_uppercase()));
            }
        }
        out.sort();
        out
    }
}
