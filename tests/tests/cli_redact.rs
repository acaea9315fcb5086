//! `auditctl redact` as a process: the processor's pipeline, config, presets and environment over
//! sample events, no broker.

use std::io::Write as _;
use std::process::{Command, Stdio};

use audit_schema::chain::verify_chain;
use audit_schema::{codec, ValidationOptions};
use serde_json::Value;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn events(&self) -> Vec<Value> {
        self.stdout.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
    }
}

/// Runs `auditctl redact ARGS` with `env` (and no other `AUDIT_*` variable), `stdin` on its
/// standard input.
fn redact(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_audit-test-auditctl"));
    command.arg("redact").args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AUDIT_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    let mut child = command.spawn().expect("run auditctl");
    let mut input = child.stdin.take().unwrap();
    // A run that refuses its config exits before reading its input: the pipe is closed then.
    match input.write_all(stdin) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap(),
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).expect("UTF-8 output"),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

const AT: &str = "2026-11-26T10:00:00Z";

/// What applications send: a password under its key, a bearer token in a header, a card number in
/// a note, and an event with nothing to redact.
const SAMPLE: &str = r#"{"action":"auth.login","outcome":"SUCCESS","actor":{"type":"user","id":"u-1"},"context":{"tenantId":"acme"},"metadata":{"method":"password","password":"correct horse battery staple"}}
{"action":"invoice.update","outcome":"SUCCESS","actor":{"type":"user","id":"u-2"},"context":{"tenantId":"globex"},"metadata":{"headers":{"Authorization":"Bearer abc.def.ghi"}}}
{"action":"card.add","outcome":"SUCCESS","actor":{"type":"user","id":"u-3"},"context":{"tenantId":"acme"},"metadata":{"note":"card 4111 1111 1111 1111 read out on the phone"}}
{"action":"auth.logout","outcome":"SUCCESS","actor":{"type":"user","id":"u-1"},"context":{"tenantId":"acme"}}
"#;

fn sample_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

#[test]
fn a_sample_file_is_redacted_as_the_processor_would_with_a_summary_by_rule() {
    let file = sample_file(SAMPLE);
    let run = redact(&["--received-at", AT, file.path().to_str().unwrap()], &[], b"");
    assert_eq!(run.code, 0, "{}", run.stderr);
    let events = run.events();
    assert_eq!(events.len(), 4, "{}", run.stdout);
    assert_eq!(events[0]["metadata"]["password"], "***");
    assert_eq!(events[0]["metadata"]["method"], "password", "only the secret goes");
    assert_eq!(events[1]["metadata"]["headers"]["Authorization"], "***");
    let note = events[2]["metadata"]["note"].as_str().unwrap();
    assert!(!note.contains("4111 1111 1111 1111"), "{note}");
    assert_eq!(events[3]["redaction"]["paths"], serde_json::json!([]));
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["receivedAt"], "2026-11-26T10:00:00.000Z");
        assert_eq!(e["integrity"]["source"]["offset"], i, "offset = line number - 1");
        assert_eq!(e["integrity"]["chain"], "audit.raw/0");
    }
    // Each line is the canonical text the processor hashes and a JSON-output processor publishes.
    let parsed: Vec<_> = events
        .iter()
        .map(|e| codec::event_from_value(e.clone(), ValidationOptions::STRICT).expect("the processed contract").event)
        .collect();
    assert!(verify_chain(&parsed).unwrap().is_intact());
    for line in run.stdout.lines() {
        let canonical = audit_schema::canonical::canonicalize(&serde_json::from_str::<Value>(line).unwrap()).unwrap();
        assert_eq!(line.as_bytes(), canonical);
    }
    assert!(run.stderr.starts_with("4 lines read: 4 events, 0 dead letters"), "{}", run.stderr);
    // The password and the Authorization header by their keys, the card number by a detector.
    let redacted = run.stderr.lines().find(|l| l.starts_with("redacted:")).unwrap_or_default();
    assert!(redacted.starts_with("redacted:     3 values (") && redacted.contains("key 2"), "{redacted}");
    let policy = events[0]["redaction"]["policy"].as_str().unwrap();
    assert!(run.stderr.contains(&format!("policy:       {policy}\n")), "{}", run.stderr);
}

#[test]
fn standard_input_gives_the_same_output_as_the_file() {
    let file = sample_file(SAMPLE);
    let from_file = redact(&["--received-at", AT, file.path().to_str().unwrap()], &[], b"");
    for args in [&["--received-at", AT, "-"][..], &["--received-at", AT]] {
        let from_stdin = redact(args, &[], SAMPLE.as_bytes());
        assert_eq!(from_stdin.code, 0, "{}", from_stdin.stderr);
        assert_eq!(from_stdin.stdout, from_file.stdout, "{args:?}");
    }
}

#[test]
fn a_bad_line_is_dead_lettered_counted_and_written_as_its_quarantine_entry_in_its_place() {
    let mut input = SAMPLE.lines().take(2).collect::<Vec<_>>().join("\n").into_bytes();
    input.extend_from_slice(b"\n{\"action\": \"auth.login\", \"outcome\": \n\n\xFF\xFE not UTF-8\n");
    input.extend_from_slice(
        "{\"action\":\"a.b\",\"outcome\":\"SUCCESS\",\"actor\":{\"type\":\"user\",\"id\":\"u\"},\"context\":{\"tenantId\":\"ac\u{202E}me\"}}\n"
            .as_bytes(),
    );
    input.extend_from_slice(SAMPLE.lines().nth(3).unwrap().as_bytes());
    let run = redact(&[], &[], &input);
    assert_eq!(run.code, 0, "dead letters are processed input: {}", run.stderr);
    let events = run.events();
    let actions: Vec<&str> = events.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        ["auth.login", "invoice.update", "audit.quarantined", "audit.quarantined", "audit.quarantined", "auth.logout"]
    );
    let offsets: Vec<i64> = events.iter().map(|e| e["integrity"]["source"]["offset"].as_i64().unwrap()).collect();
    assert_eq!(offsets, [0, 1, 2, 4, 5, 6], "the blank line 4 is skipped, nothing else");
    assert_eq!(events[2]["metadata"]["deadLetter"]["class"], "decode");
    let metadata = events[2]["metadata"].as_object().unwrap();
    assert_eq!(metadata.keys().collect::<Vec<_>>(), ["deadLetter", "rawBytes", "rawSha256"], "no content");
    assert_eq!(events[2]["context"]["tenantId"], Value::Null, "a torn line has no tenant to key it by");
    assert_eq!(events[4]["context"]["tenantId"], Value::Null, "nor has one whose tenant is refused");
    let s = &run.stderr;
    assert!(
        s.starts_with("7 lines read: 3 events, 3 dead letters (written as quarantine entries), 1 blank line skipped"),
        "{s}"
    );
    assert!(s.contains("dead letters: 3 (decode 2, invalid 1)\n"), "{s}");
    assert!(s.contains("  line 3 decode: event is not valid JSON"), "{s}");
    assert!(s.contains("  line 5 decode: event is not valid UTF-8"), "{s}");
    assert!(
        s.contains("  line 6 invalid: context.tenantId contains U+202E RIGHT-TO-LEFT OVERRIDE at character 3"),
        "{s}"
    );
}

#[test]
fn a_bad_config_exits_2_naming_the_key() {
    let bad_value = sample_file("[limits]\nmax_event_bytes = 10\n");
    let unknown = sample_file("[redaction]\nmaks = \"x\"\n");
    for (file, key) in [(&bad_value, "limits.max_event_bytes"), (&unknown, "maks")] {
        let run = redact(&["--config", file.path().to_str().unwrap()], &[], SAMPLE.as_bytes());
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(run.stderr.contains(key), "{}", run.stderr);
        assert!(run.stdout.is_empty());
    }
    let run = redact(&[], &[("AUDIT_LIMITS__MAX_DIFF_BYTES", "1")], SAMPLE.as_bytes());
    assert_eq!((run.code, run.stderr.contains("limits.max_diff_bytes")), (2, true), "{}", run.stderr);
    let run = redact(&[], &[("AUDIT_PRESET", "fastest")], SAMPLE.as_bytes());
    assert_eq!((run.code, run.stderr.contains("preset")), (2, true), "{}", run.stderr);
    let run = redact(&["--received-at", "yesterday"], &[], SAMPLE.as_bytes());
    assert_eq!(run.code, 2, "a bad argument: {}", run.stderr);
}

#[test]
fn unreadable_input_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.jsonl");
    let run = redact(&[missing.to_str().unwrap()], &[], b"");
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("missing.jsonl"), "{}", run.stderr);
    let run = redact(&[dir.path().to_str().unwrap()], &[], b"");
    assert_eq!(run.code, 3, "a directory cannot be read as lines: {}", run.stderr);
}

#[test]
fn a_preset_and_an_environment_override_apply_as_in_the_processor() {
    // An unknown field: a warning by default, a dead letter under strict-multi-tenant.
    let input = r#"{"action":"auth.login","outcome":"SUCCESS","actor":{"type":"user","id":"u-1","email":"a@example.com"},"metadata":{"token":"t0k3n"}}"#;
    let lenient = redact(&[], &[], input.as_bytes());
    assert_eq!(lenient.code, 0, "{}", lenient.stderr);
    assert_eq!(lenient.events()[0]["action"], "auth.login");
    assert!(lenient.stderr.contains("dead letters: 0\n"), "{}", lenient.stderr);
    let strict = redact(&[], &[("AUDIT_PRESET", "strict-multi-tenant")], input.as_bytes());
    assert_eq!(strict.code, 0, "{}", strict.stderr);
    assert_eq!(strict.events()[0]["action"], "audit.quarantined");
    assert!(
        strict.stderr.contains("  line 1 invalid: invalid audit event: actor.email: unknown field"),
        "{}",
        strict.stderr
    );
    // The file overrides the preset and the environment the file, as for the processor.
    let config = sample_file("[processing]\nstrict = false\n[redaction]\nmask = \"[file]\"\n");
    let path = config.path().to_str().unwrap();
    let run = redact(
        &["--config", path],
        &[("AUDIT_PRESET", "strict-multi-tenant"), ("AUDIT_REDACTION__MASK", "REDACTED")],
        input.as_bytes(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.events()[0]["metadata"]["token"], "REDACTED");
    let from_file = redact(&[], &[("AUDIT_CONFIG", path)], input.as_bytes());
    assert_eq!(
        from_file.events()[0]["metadata"]["token"],
        "[file]",
        "AUDIT_CONFIG names the file, as for the processor"
    );
}

#[test]
fn the_production_config_runs_without_the_checkpoint_signing_key() {
    let config = sample_file("[checkpoint]\nsigning_key_file = \"/run/secrets/checkpoint.key\"\n");
    let run = redact(&["--config", config.path().to_str().unwrap()], &[], SAMPLE.as_bytes());
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.events().len(), 4);
}
