//! The sink's configuration as an operator meets it: defaults ← TOML file ← `AUDIT_*` environment,
//! checked before any I/O (`--check-config` needs no broker or store), errors naming the key,
//! exit code 2.

use std::process::{Command, Output};

const SINK: &str = env!("CARGO_BIN_EXE_audit-test-sink");

fn check(file: Option<&std::path::Path>, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(SINK);
    cmd.arg("--check-config").env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    if let Some(f) = file {
        cmd.arg("--config").arg(f);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run audit-sink --check-config")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn environment_overrides_the_file_including_top_level_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sink.toml");
    std::fs::write(
        &file,
        "log_filter = \"debug\"\n[kafka]\ngroup_id = \"from-file\"\n[store]\nkind = \"http\"\nurl = \"https://siem.example/ingest\"\nformat = \"splunk_hec\"\n",
    )
    .unwrap();
    let out = check(
        Some(&file),
        &[("AUDIT_KAFKA__GROUP_ID", "audit-siem"), ("AUDIT_LOG_FILTER", "warn"), ("AUDIT_DRAIN_TIMEOUT_MS", "5000")],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("group_id = \"audit-siem\""), "env wins over the file: {t}");
    assert!(t.contains("log_filter = \"warn\""), "top-level keys come from the environment too: {t}");
    assert!(t.contains("drain_timeout_ms = 5000"), "{t}");
    assert!(t.contains("format = \"splunk_hec\""), "the file's values stay: {t}");
    assert!(t.contains("config OK (http sink, group audit-siem)"), "{t}");
}

#[test]
fn bad_values_and_unknown_keys_are_refused_naming_the_key() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("AUDIT_STORE__KIND", "jsonl")], "kafka.group_id"),
        (&[("AUDIT_KAFKA__GROUP_ID", "g")], "store.kind"),
        (
            &[("AUDIT_KAFKA__GROUP_ID", "g"), ("AUDIT_STORE__KIND", "http"), ("AUDIT_STORE__URL", "ftp://x")],
            "store.url",
        ),
        (
            &[
                ("AUDIT_KAFKA__GROUP_ID", "g"),
                ("AUDIT_STORE__KIND", "http"),
                ("AUDIT_STORE__URL", "https://es:9200/_bulk"),
                ("AUDIT_STORE__FORMAT", "elasticsearch"),
            ],
            "store.index",
        ),
        (
            &[
                ("AUDIT_KAFKA__GROUP_ID", "g"),
                ("AUDIT_STORE__KIND", "http"),
                ("AUDIT_STORE__URL", "https://x"),
                ("AUDIT_STORE__AUTH__SCHEME", "bearer"),
            ],
            "store.auth.secret_env",
        ),
        (
            &[("AUDIT_KAFKA__GROUP_ID", "g"), ("AUDIT_STORE__KIND", "jsonl"), ("AUDIT_BATCH__MAX_EVENTS", "0")],
            "batch.max_events",
        ),
        (
            &[("AUDIT_KAFKA__GROUP_ID", "g"), ("AUDIT_STORE__KIND", "jsonl"), ("AUDIT_BATCH__IDLE_MS", "0")],
            "batch.idle_ms",
        ),
        (&[("AUDIT_KAFKA__GROUP_ID", "g"), ("AUDIT_STORE__KIND", "jsonl"), ("AUDIT_KAFKA__COLOUR", "blue")], "colour"),
    ];
    for (env, key) in cases {
        let out = check(None, env);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{env:?}: exit 2 for a bad config: {t}");
        assert!(t.contains(key), "{env:?}: the error names {key}: {t}");
    }
    // librdkafka options the guarantees depend on cannot be overridden (dotted names: TOML only).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sink.toml");
    std::fs::write(&file, "[kafka.librdkafka]\n\"enable.auto.commit\" = \"true\"\n").unwrap();
    let out = check(Some(&file), &[("AUDIT_KAFKA__GROUP_ID", "g"), ("AUDIT_STORE__KIND", "jsonl")]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("kafka.librdkafka.enable.auto.commit"), "{t}");
}
