//! The deployment files agree with the code: every setting they name exists,
//! the queue KEDA watches is the one workers consume, the probes and metrics
//! port are what the worker serves, and the image builds the way CI does.

use loopmind_worker::config::{Settings, METRICS_PORT};
use loopmind_worker::http::{HEALTH_PATH, METRICS_PATH};
use serde_yaml_ng::Value;
use std::path::PathBuf;

fn deploy(file: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy")).join(file)
}

fn yaml_docs(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(deploy(file)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| {
            let mut v: Value = serde::Deserialize::deserialize(d).unwrap();
            v.apply_merge().unwrap();
            v
        })
        .collect()
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| match k.parse::<usize>() {
        Ok(i) => &v[i],
        Err(_) => &v[*k],
    })
}

fn str_of<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    s(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path:?} is not a string"))
}

/// `LOOPMIND_QUEUE__URL` -> is `queue.url` a setting?
fn assert_setting(var: &str, what: &str) {
    let known = serde_json::to_value(Settings::default()).unwrap();
    let rest = var.strip_prefix("LOOPMIND_").unwrap();
    let (section, key) = rest
        .split_once("__")
        .unwrap_or_else(|| panic!("{what}: {var} is not LOOPMIND_<SECTION>__<KEY>"));
    let (section, key) = (section.to_lowercase(), key.to_lowercase());
    assert!(
        known[&section].get(&key).is_some(),
        "{what}: {var} names {section}.{key}, which is not a setting"
    );
}

/// Settings from a TOML text, through the real loader (unknown keys fail).
/// A Kubernetes quantity in binary units ("8Gi", "512Mi") as MiB.
fn mebibytes(q: &str) -> u64 {
    let (n, unit) = q.split_at(q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len()));
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("quantity {q}"));
    match unit {
        "Gi" => n << 10,
        "Mi" => n,
        _ => panic!("quantity {q}: want Gi or Mi"),
    }
}

fn load_toml(text: &str, what: &str) -> Settings {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("loopmind.toml");
    std::fs::write(&f, text).unwrap();
    Settings::load(Some(&f)).unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn by_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn kubernetes_manifests_agree_with_the_worker() {
    let cm = &yaml_docs("k8s/configmap.yaml")[0];
    let settings = load_toml(str_of(cm, &["data", "loopmind.toml"]), "ConfigMap");
    let secret = &yaml_docs("k8s/secret.yaml")[0];
    for (k, _) in secret["stringData"].as_mapping().unwrap() {
        let k = k.as_str().unwrap();
        if k.starts_with("LOOPMIND_") {
            assert_setting(k, "Secret");
        }
    }
    let worker = &yaml_docs("k8s/worker.yaml")[0];
    assert_eq!(worker["kind"], "Deployment");
    let pod = s(worker, &["spec", "template", "spec"]);
    let c = s(pod, &["containers", "0"]);
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "worker");
    // The config file the worker reads is the ConfigMap's, where it is mounted.
    let config_path = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
    let mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "config")
        .unwrap();
    assert_eq!(
        format!("{}/loopmind.toml", str_of(mount, &["mountPath"])),
        config_path
    );
    // Probes and metrics: the paths and port the worker serves.
    let port = s(c, &["ports", "0"]);
    assert_eq!(
        port["containerPort"].as_u64(),
        Some(settings.worker.metrics_port as u64)
    );
    let port_name = str_of(port, &["name"]);
    assert_eq!(
        str_of(c, &["readinessProbe", "httpGet", "path"]),
        HEALTH_PATH
    );
    let live = str_of(c, &["livenessProbe", "httpGet", "path"]);
    assert!([HEALTH_PATH, METRICS_PATH].contains(&live), "{live}");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(str_of(c, &[probe, "httpGet", "port"]), port_name);
    }
    let ann = s(worker, &["spec", "template", "metadata", "annotations"]);
    assert_eq!(
        str_of(ann, &["prometheus.io/port"]),
        settings.worker.metrics_port.to_string()
    );
    assert_eq!(str_of(ann, &["prometheus.io/path"]), METRICS_PATH);
    // Scale-down never kills a render: SIGTERM finishes the job in hand,
    // which may take its whole render deadline and its transfers.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace >= settings.render.deadline_s + 300,
        "grace {grace} s is shorter than the render deadline ({} s) and its transfers",
        settings.render.deadline_s
    );
    // The probes come from the kubelet: /healthz and /metrics must listen
    // beyond the pod's loopback.
    assert_eq!(settings.worker.metrics_addr, "0.0.0.0");
    // The scratch volume is the jobs' disk budgets and their headroom: a
    // track over the budget fails, named, before the pod is evicted.
    let scratch = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "scratch")
        .unwrap();
    let size_limit = mebibytes(str_of(scratch, &["emptyDir", "sizeLimit"]));
    let per_job = settings.render.disk_budget_mib + loopmind_worker::config::DISK_HEADROOM_MIB;
    assert_eq!(
        size_limit,
        per_job * settings.queue.prefetch as u64,
        "the emptyDir's sizeLimit is render.disk_budget_mib + headroom per job in hand"
    );
    let ephemeral = mebibytes(str_of(c, &["resources", "limits", "ephemeral-storage"]));
    assert!(
        ephemeral >= size_limit,
        "{ephemeral} MiB < {size_limit} MiB"
    );
    assert!(s(c, &["resources", "requests", "memory"])
        .as_str()
        .is_some());
    assert_eq!(
        str_of(s(c, &["envFrom", "0"]), &["secretRef", "name"]),
        str_of(secret, &["metadata", "name"])
    );
    // KEDA scales this Deployment on the queue workers consume, from zero,
    // counting in-flight jobs (http protocol).
    let keda = yaml_docs("k8s/keda.yaml");
    let so = by_kind(&keda, "ScaledObject");
    assert_eq!(
        str_of(so, &["spec", "scaleTargetRef", "name"]),
        str_of(worker, &["metadata", "name"])
    );
    assert_eq!(so["spec"]["minReplicaCount"].as_u64(), Some(0));
    let trigger = s(so, &["spec", "triggers", "0"]);
    assert_eq!(trigger["type"], "rabbitmq");
    assert_eq!(
        str_of(trigger, &["metadata", "queueName"]),
        settings.queue.jobs
    );
    assert_eq!(str_of(trigger, &["metadata", "protocol"]), "http");
    let auth = by_kind(&keda, "TriggerAuthentication");
    let host = s(auth, &["spec", "secretTargetRef", "0"]);
    assert_eq!(
        str_of(host, &["name"]),
        str_of(secret, &["metadata", "name"])
    );
    assert!(secret["stringData"][str_of(host, &["key"])]
        .as_str()
        .unwrap()
        .starts_with("http"));
    // The coordinator job reads the same config.
    let job = &yaml_docs("k8s/coordinator-job.yaml")[0];
    let jc = s(job, &["spec", "template", "spec", "containers", "0"]);
    assert_eq!(str_of(jc, &["args", "0"]), "coordinator");
    assert!(jc["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|a| a == "--catalog"));
}

#[test]
fn compose_stack_agrees_with_the_worker() {
    let compose = &yaml_docs("compose.yaml")[0];
    let services = &compose["services"];
    for name in ["rabbitmq", "garage", "garage-init", "worker", "coordinator"] {
        assert!(services.get(name).is_some(), "no {name} service");
    }
    let worker = &services["worker"];
    // `--scale worker=N`: no fixed name, no host port.
    assert!(worker.get("container_name").is_none());
    assert!(worker.get("ports").is_none());
    assert_eq!(str_of(worker, &["command", "0"]), "worker");
    for svc in ["worker", "coordinator", "garage-init"] {
        for (k, _) in services[svc]["environment"].as_mapping().unwrap() {
            let k = k.as_str().unwrap();
            if k.starts_with("LOOPMIND_") {
                assert_setting(k, &format!("compose {svc}"));
            }
        }
    }
    // The mounted loopmind.toml is valid and is the file --config names.
    let settings = load_toml(
        &std::fs::read_to_string(deploy("loopmind.toml")).unwrap(),
        "deploy/loopmind.toml",
    );
    let mounted = worker["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .find(|v| v.starts_with("./loopmind.toml:"))
        .unwrap();
    let inside = mounted.split(':').nth(1).unwrap();
    let cmd: Vec<&str> = worker["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        cmd[cmd.iter().position(|a| *a == "--config").unwrap() + 1],
        inside
    );
    assert_eq!(settings.worker.metrics_port, METRICS_PORT);
    // The bucket garage-init creates is the one LoopMind uses.
    assert_eq!(
        services["garage-init"]["environment"]["LOOPMIND_STORE__BUCKET"],
        worker["environment"]["LOOPMIND_STORE__BUCKET"]
    );
    // The example catalog names only known targets.
    let cat: serde_json::Value =
        serde_json::from_slice(&std::fs::read(deploy("example-catalog.json")).unwrap()).unwrap();
    let all = cat["targets"].as_array().unwrap().iter().chain(
        cat["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["targets"].as_array())
            .flatten(),
    );
    for t in all {
        assert!(
            loopmind_dsp::targets::preset(t.as_str().unwrap()).is_some(),
            "{t}"
        );
    }
}

/// A Dockerfile's instructions: comments dropped, continuation lines joined,
/// as (INSTRUCTION, rest) pairs.
fn dockerfile(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(head) => {
                cur.push_str(head);
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                let (i, rest) = cur.trim().split_once(' ').unwrap_or((cur.trim(), ""));
                out.push((i.to_uppercase(), rest.trim().to_string()));
                cur.clear();
            }
        }
    }
    out
}

#[test]
fn image_builds_like_ci_and_runs_unprivileged() {
    let df = dockerfile(&std::fs::read_to_string(deploy("Dockerfile")).unwrap());
    let ci = std::fs::read_to_string(deploy("../.ci/run")).unwrap();
    let runs: Vec<&str> = df
        .iter()
        .filter(|(i, _)| i == "RUN")
        .map(|(_, r)| r.as_str())
        .collect();
    // The same build command as CI, in instructions (not in a comment).
    assert!(ci
        .lines()
        .any(|l| l.trim_start().starts_with("cargo build --release --locked")));
    assert!(runs
        .iter()
        .any(|r| r.contains("cargo build --release --locked")));
    // The runtime stage: everything after the last FROM.
    let last_from = df.iter().rposition(|(i, _)| i == "FROM").unwrap();
    let runtime = &df[last_from..];
    let has = |ins: &str, want: &str| runtime.iter().any(|(i, r)| i == ins && r == want);
    assert!(has("USER", "10001"), "the runtime stage runs as root");
    assert!(has("CMD", r#"["worker"]"#));
    assert!(has("EXPOSE", &METRICS_PORT.to_string()));
    assert!(runtime.iter().any(|(i, r)| i == "HEALTHCHECK"
        && r.contains(&format!("127.0.0.1:{METRICS_PORT}{HEALTH_PATH}"))));
    assert!(runtime
        .iter()
        .any(|(i, r)| i == "RUN" && r.contains("ca-certificates")));
    // The image's environment names settings, and none the Kubernetes
    // ConfigMap sets: the environment would override the mounted file.
    let cm = &yaml_docs("k8s/configmap.yaml")[0];
    let cm_toml: toml::Table = str_of(cm, &["data", "loopmind.toml"]).parse().unwrap();
    for (_, rest) in df.iter().filter(|(i, _)| i == "ENV") {
        let var = rest.split(['=', ' ']).next().unwrap();
        if let Some(setting) = var.strip_prefix("LOOPMIND_") {
            assert_setting(var, "Dockerfile ENV");
            let (section, key) = setting.split_once("__").unwrap();
            let (section, key) = (section.to_lowercase(), key.to_lowercase());
            assert!(
                cm_toml.get(&section).and_then(|t| t.get(&key)).is_none(),
                "the image's {var} overrides the ConfigMap's {section}.{key}"
            );
        }
    }
    // The dependency layer stubs exactly the test targets the manifest
    // declares (a missing stub fails the image build).
    let manifest = std::fs::read_to_string(deploy("../coordinator/Cargo.toml")).unwrap();
    let mut declared: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("path = \"../tests/"))
        .map(|l| l.trim_end_matches(".rs\""))
        .collect();
    declared.sort_unstable();
    let stub = runs
        .iter()
        .find(|r| r.contains("for t in"))
        .expect("a RUN stubbing the test targets");
    let list = &stub[stub.find("for t in").unwrap() + "for t in".len()..];
    let mut stubbed: Vec<&str> = list[..list.find(';').unwrap()].split_whitespace().collect();
    stubbed.sort_unstable();
    assert_eq!(
        stubbed, declared,
        "Dockerfile test stubs vs coordinator/Cargo.toml"
    );
}
