//! Invariants of the workloads: Deployments, topics, partition counts, scaling.

use super::*;

pub fn deployment_problems(objects: &[Value], workloads: &[Workload]) -> Vec<String> {
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

pub fn topics(objects: &[Value]) -> BTreeMap<&str, &Value> {
    of_kind(objects, "KafkaTopic").map(|t| (t["spec"]["topicName"].as_str().unwrap_or(name(t)), t)).collect()
}

/// The raw topic's partition count, after checking the topics against the workloads' configs.
pub fn partition_count(objects: &[Value], workloads: &[Workload], problems: &mut Vec<String>) -> Option<u64> {
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
pub fn scaling_problems(objects: &[Value], workloads: &[Workload], partitions: u64) -> Vec<String> {
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
