//! Helpers over rendered Kubernetes objects (JSON values).

use super::*;

pub fn kind(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or("")
}

pub fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or("")
}

pub fn id(o: &Value) -> String {
    format!("{}/{}", kind(o), name(o))
}

pub fn of_kind<'a>(objects: &'a [Value], k: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    objects.iter().filter(move |o| kind(o) == k)
}

pub fn find<'a>(objects: &'a [Value], k: &str, n: &str) -> Option<&'a Value> {
    objects.iter().find(|o| kind(o) == k && name(o) == n)
}

pub fn items(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// Whether `selector` (a label map; empty selects everything) selects `labels`.
pub fn selects(selector: &Value, labels: &Value) -> bool {
    selector.as_object().is_none_or(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// Pod specs of the workloads: `(id, pod template)`.
pub fn pod_templates(objects: &[Value]) -> Vec<(String, &Value)> {
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

pub fn containers(pod_spec: &Value) -> impl Iterator<Item = &Value> {
    items(&pod_spec["initContainers"]).iter().chain(items(&pod_spec["containers"]))
}

pub fn u64_at(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}
