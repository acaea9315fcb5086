//! The binaries' check: each ConfigMap's TOML, with the environment its Deployment declares, passes
//! the binary's own `--check-config`; the effective configs are the workloads the invariants read.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    Processor,
    Sink,
}

/// A Deployment running one of our binaries, with the effective config `--check-config` printed.
#[derive(Debug, Clone)]
pub struct Workload {
    pub deployment: String,
    pub binary: Binary,
    pub config: Value,
}

impl Workload {
    pub fn kafka(&self, key: &str) -> &str {
        self.config["kafka"][key].as_str().unwrap_or("")
    }

    /// The dead-letter topic, with the sinks' default `<processed topic>.dlq.<group>` filled in.
    pub fn dead_letter_topic(&self) -> String {
        match self.kafka("dead_letter_topic") {
            "" => format!("{}.dlq.{}", self.kafka("processed_topic"), self.kafka("group_id")),
            topic => topic.to_owned(),
        }
    }

    pub fn input_topic(&self) -> &str {
        self.kafka(if self.binary == Binary::Processor { "raw_topic" } else { "processed_topic" })
    }

    pub fn drain_timeout_ms(&self) -> u64 {
        let v = match self.binary {
            Binary::Processor => &self.config["shutdown"]["drain_timeout_ms"],
            Binary::Sink => &self.config["drain_timeout_ms"],
        };
        u64_at(v).unwrap_or(0)
    }

    pub fn listen_port(&self) -> Option<u64> {
        self.config["http"]["listen"].as_str()?.rsplit_once(':')?.1.parse().ok()
    }
}

/// A value for an environment variable that comes from a Secret: shaped like what the binary
/// expects (a URL for the stores, 16 bytes or more for keys), never a real secret.
pub fn placeholder(variable: &str) -> &'static str {
    match variable {
        "DATABASE_URL" => "postgres://placeholder@postgres.invalid:5432/audit",
        "MONGODB_URI" => "mongodb://mongodb.invalid:27017",
        _ => "placeholder-secret-value-0123456789",
    }
}

/// The file `path` as the container sees it: the ConfigMap key behind the volume mounted there.
pub fn mounted_config<'a>(
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
pub fn with_secret_placeholders(
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
pub fn check_configs(tools: &Tools, objects: &[Value], problems: &mut Vec<String>) -> Vec<Workload> {
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
        let mut command = Command::new(if *binary == Binary::Processor { &tools.processor } else { &tools.sink });
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
