//! Invariants of objects and pods: namespaces, no literal secret, no root, limits, probes.

use super::*;

/// Every invariant of a rendered overlay; each problem names the object and what is wrong.
pub fn invariant_problems(objects: &[Value], workloads: &[Workload], deploy_md: &str) -> Vec<String> {
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

pub fn namespace_problems(objects: &[Value]) -> Vec<String> {
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
pub fn secret_like(key: &str) -> bool {
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
pub fn has_url_credentials(text: &str) -> bool {
    text.match_indices("://").any(|(i, _)| {
        let rest = &text[i + 3..];
        let authority = rest.split(['/', ' ', '"', '\'', '\n', '?', '#']).next().unwrap_or("");
        authority.split_once('@').is_some_and(|(user, _)| user.contains(':'))
    })
}

pub fn walk_strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
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
pub fn literal_secret_problems(objects: &[Value]) -> Vec<String> {
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
pub fn pod_problems(who: &str, spec: &Value) -> Vec<String> {
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

pub fn probe_path<'a>(c: &'a Value, probe: &str) -> (&'a str, &'a Value) {
    let get = &c[probe]["httpGet"];
    (get["path"].as_str().unwrap_or(""), &get["port"])
}

/// The container port a probe or Service names (by name or number).
pub fn container_port(c: &Value, port: &Value) -> Option<u64> {
    if let Some(n) = port.as_u64() {
        return Some(n);
    }
    items(&c["ports"]).iter().find(|p| p["name"] == *port).and_then(|p| p["containerPort"].as_u64())
}
