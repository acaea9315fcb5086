//! `deploy/`: the shipped overlays pass the Kubernetes policy checker in
//! `tests/src/deploy_policy/` (rendered, validated against the schemas, every invariant kept), and
//! the checker catches each break of a broken copy.

use std::collections::BTreeSet;

use audit_tests::deploy_policy::*;
use serde_json::{json, Value};

const PROCESSOR: &str = env!("CARGO_BIN_EXE_audit-test-processor");
const SINK: &str = env!("CARGO_BIN_EXE_audit-test-sink");

fn tools() -> Tools {
    audit_tests::deploy_policy::tools(PROCESSOR, SINK)
}

#[test]
fn dev_overlay_renders_validates_and_keeps_every_invariant() {
    check_overlay(
        &tools(),
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
        &tools(),
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
