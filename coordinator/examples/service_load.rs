//! Load on a running `loopmind serve`, as many label backends at once
//! would put it (bench/service.sh starts the service and reads the figures):
//!
//!   service_load submit BASE KEY UPLOAD N CLIENTS
//!     N job submissions from CLIENTS connections; the time until all are
//!     accepted (201), and until the outbox has relayed them all to the
//!     queue (`loopmind_service_outbox` at 0 on /metrics; KEY needs admin).
//!   service_load get BASE KEY CLIENTS SECONDS
//!     CLIENTS connections asking `GET /v1/jobs/{id}` of the tenant's jobs in
//!     a loop for SECONDS: requests per second and latency percentiles.
//!
//! One JSON line per run on stdout.

use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .max_idle_connections_per_host(1)
        .build()
}

fn submit(args: &[String]) {
    let [base, key, upload, n, clients] = &args[..] else {
        panic!("submit BASE KEY UPLOAD N CLIENTS");
    };
    let (n, clients): (usize, usize) = (n.parse().unwrap(), clients.parse().unwrap());
    let body = json!({"input": {"upload_id": upload}, "targets": ["spotify"]}).to_string();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (base, key, body, next) = (base.clone(), key.clone(), body.clone(), next.clone());
            std::thread::spawn(move || {
                let a = agent();
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let r = a
                        .post(&format!("{base}/v1/jobs"))
                        .set("Authorization", &format!("Bearer {key}"))
                        .set("Content-Type", "application/json")
                        .send_string(&body);
                    match r {
                        Ok(r) if r.status() == 201 => {}
                        Ok(r) => panic!("submission answered {}", r.status()),
                        Err(e) => panic!("submission failed: {e}"),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let accepted = started.elapsed().as_secs_f64();
    let a = agent();
    let relayed = loop {
        if outbox(&a, base, key) == 0 {
            break started.elapsed().as_secs_f64();
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "outbox never drained"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    println!(
        "{}",
        json!({"run": "submit", "jobs": n, "clients": clients,
            "accepted_s": accepted, "relayed_s": relayed, "per_s": n as f64 / relayed})
    );
}

/// `loopmind_service_outbox` from /metrics.
fn outbox(a: &ureq::Agent, base: &str, key: &str) -> i64 {
    let text = a
        .get(&format!("{base}/metrics"))
        .set("Authorization", &format!("Bearer {key}"))
        .call()
        .expect("/metrics (the key needs admin)")
        .into_string()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("loopmind_service_outbox "))
        .and_then(|v| v.trim().parse().ok())
        .expect("loopmind_service_outbox on /metrics")
}

/// Up to 500 of the tenant's job ids.
fn job_ids(base: &str, key: &str) -> Vec<String> {
    let page: Value = agent()
        .get(&format!("{base}/v1/jobs?limit=500"))
        .set("Authorization", &format!("Bearer {key}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect()
}

fn get(args: &[String]) {
    let [base, key, clients, seconds] = &args[..] else {
        panic!("get BASE KEY CLIENTS SECONDS");
    };
    let (clients, seconds): (usize, f64) = (clients.parse().unwrap(), seconds.parse().unwrap());
    let ids = Arc::new(job_ids(base, key));
    assert!(!ids.is_empty(), "the tenant has no jobs to ask about");
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (base, key, ids) = (base.clone(), key.clone(), ids.clone());
            std::thread::spawn(move || {
                let a = agent();
                let mut took = Vec::new();
                let mut i = c;
                while Instant::now() < until {
                    let url = format!("{base}/v1/jobs/{}", ids[i % ids.len()]);
                    let t = Instant::now();
                    let r = a
                        .get(&url)
                        .set("Authorization", &format!("Bearer {key}"))
                        .call();
                    assert!(matches!(&r, Ok(r) if r.status() == 200), "GET {url}: {r:?}");
                    let _ = r.unwrap().into_string();
                    took.push(t.elapsed().as_secs_f64() * 1000.0);
                    i += clients;
                }
                took
            })
        })
        .collect();
    let mut all: Vec<f64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| all[((all.len() - 1) as f64 * p).round() as usize];
    println!(
        "{}",
        json!({"run": "get", "clients": clients, "requests": all.len(),
            "per_s": all.len() as f64 / seconds, "p50_ms": pct(0.5), "p99_ms": pct(0.99),
            "max_ms": all.last()})
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("submit") => submit(&args[1..]),
        Some("get") => get(&args[1..]),
        _ => panic!("service_load submit|get ..."),
    }
}
