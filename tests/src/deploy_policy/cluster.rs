//! Invariants of the cluster around the workloads: Kafka ACLs, monitoring, network policies, the verify CronJob.

use super::*;

/// Whether one of `user`'s ACLs allows `operation` on the resource `(resource_type, resource)`.
pub fn acl_allows(user: &Value, resource_type: &str, resource: &str, operation: &str) -> bool {
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
pub fn kafka_user_of<'a>(objects: &'a [Value], d: &Value) -> Option<&'a Value> {
    items(&d["spec"]["template"]["spec"]["volumes"])
        .iter()
        .filter_map(|v| v["secret"]["secretName"].as_str())
        .find_map(|s| find(objects, "KafkaUser", s))
}

/// Only the processor reads the raw topic; each sink reads only the processed topic with its own
/// group and writes only its own dead letters; each workload may do what its config needs.
pub fn acl_problems(objects: &[Value], workloads: &[Workload]) -> Vec<String> {
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
pub fn metric_names(expr: &str) -> Vec<String> {
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
pub fn known_metrics() -> BTreeSet<String> {
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
pub fn monitoring_problems(objects: &[Value], deploy_md: &str) -> Vec<String> {
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
pub fn network_problems(objects: &[Value], workloads: &[Workload]) -> Vec<String> {
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
pub fn verify_problems(objects: &[Value]) -> Vec<String> {
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
