//! Semantic validation of the contract: the rules of the JSON Schemas that the Rust types alone do
//! not enforce (lengths, patterns, ranges), reported with the path of the offending field.

use std::net::IpAddr;

use crate::{Actor, AuditEvent, AuditEventInput, Context, ProducerInfo, Target, SCHEMA_VERSION};

/// Largest integer every JSON reader holds exactly (2^53 - 1).
pub const MAX_SAFE_INTEGER: u64 = 9_007_199_254_740_991;

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `actor.id` or `actor.roles[2]`.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// A problem `message` at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { path: path.into(), message: message.into() }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// How strictly unknown fields and naming conventions are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ValidationOptions {
    /// Unknown fields are errors instead of warnings.
    pub strict: bool,
    /// An action that looks like it embeds an identifier (UUID, long hex or digit run) is an error
    /// instead of a warning.
    pub strict_action_naming: bool,
}

impl ValidationOptions {
    /// Unknown fields and identifier-like actions are errors.
    pub const STRICT: ValidationOptions = ValidationOptions { strict: true, strict_action_naming: true };
    /// Unknown fields and identifier-like actions are warnings.
    pub const LENIENT: ValidationOptions = ValidationOptions { strict: false, strict_action_naming: false };
}

/// Errors and warnings found in one event.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    pub(crate) errors: Vec<FieldError>,
    pub(crate) warnings: Vec<FieldError>,
}

impl Findings {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(path, message));
    }

    fn short_text(&mut self, path: &str, value: &str) {
        self.text(path, value, 1, SHORT_TEXT_MAX);
    }

    fn opt_short_text(&mut self, path: &str, value: &Option<String>) {
        if let Some(v) = value {
            self.short_text(path, v);
        }
    }

    fn text(&mut self, path: &str, value: &str, min: usize, max: usize) {
        if let Some(problem) = text_problem(value, min, max) {
            self.error(path, problem);
        }
    }
}

/// Longest short text (names, ids, roles), in characters.
const SHORT_TEXT_MAX: usize = 256;

/// What is wrong with the length of a text field, if anything.
fn text_problem(value: &str, min: usize, max: usize) -> Option<String> {
    let chars = value.chars().count();
    if chars < min {
        Some("must not be empty".into())
    } else if chars > max {
        Some(format!("is {chars} characters long, at most {max} allowed"))
    } else {
        None
    }
}

/// `^[A-Za-z0-9][A-Za-z0-9._:-]*$`, 1..=128.
pub(crate) fn check_event_id(f: &mut Findings, path: &str, id: &str) {
    f.text(path, id, 1, 128);
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !id.is_empty() && (!first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))) {
        f.error(path, "may hold only letters, digits and . _ : - and must start with a letter or digit");
    }
}

fn check_action(f: &mut Findings, action: &str, options: ValidationOptions) {
    f.text("action", action, 1, 128);
    let mut chars = action.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if !action.is_empty() && (!first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c))) {
        f.error(
            "action",
            format!("{action:?} must start with a letter and hold only letters, digits and _ . : - (e.g. user.login)"),
        );
        return;
    }
    if let Some(why) = identifier_in_action(action) {
        let message = format!(
            "{action:?} looks like it embeds an identifier ({why}); actions must be low-cardinality names, put ids in target"
        );
        if options.strict_action_naming {
            f.error("action", message);
        } else {
            f.warnings.push(FieldError::new("action", message));
        }
    }
}

/// Why `action` looks like it contains an identifier, if it does.
pub fn identifier_in_action(action: &str) -> Option<&'static str> {
    let bytes = action.as_bytes();
    // 8-4-4-4-12 hex: a UUID.
    let uuid_shape = [8usize, 4, 4, 4, 12];
    for start in 0..bytes.len() {
        let mut i = start;
        let mut ok = true;
        for (n, len) in uuid_shape.iter().enumerate() {
            if i + len > bytes.len() || !bytes[i..i + len].iter().all(u8::is_ascii_hexdigit) {
                ok = false;
                break;
            }
            i += len;
            if n < 4 {
                if bytes.get(i) != Some(&b'-') {
                    ok = false;
                    break;
                }
                i += 1;
            }
        }
        if ok {
            return Some("a UUID");
        }
    }
    let longest_run = |pred: fn(&u8) -> bool| bytes.split(|b| !pred(b)).map(<[u8]>::len).max().unwrap_or(0);
    if longest_run(u8::is_ascii_digit) >= 5 {
        return Some("a run of 5 or more digits");
    }
    if bytes
        .split(|b| !b.is_ascii_alphanumeric())
        .any(|seg| seg.len() >= 16 && seg.iter().all(u8::is_ascii_hexdigit) && seg.iter().any(u8::is_ascii_digit))
    {
        return Some("a long hex string");
    }
    None
}

fn check_actor(f: &mut Findings, actor: &Actor) {
    f.short_text("actor.type", &actor.kind);
    f.short_text("actor.id", &actor.id);
    f.opt_short_text("actor.name", &actor.name);
    if let Some(roles) = &actor.roles {
        if roles.len() > 64 {
            f.error("actor.roles", format!("has {} roles, at most 64 allowed", roles.len()));
        }
        for (i, role) in roles.iter().enumerate() {
            // The path is formatted only for a role that has a problem.
            if let Some(problem) = text_problem(role, 1, SHORT_TEXT_MAX) {
                f.error(&format!("actor.roles[{i}]"), problem);
            }
        }
    }
}

fn check_target(f: &mut Findings, target: &Option<Target>) {
    if let Some(t) = target {
        f.short_text("target.type", &t.kind);
        f.short_text("target.id", &t.id);
        f.opt_short_text("target.name", &t.name);
    }
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_context(f: &mut Findings, c: &Context, require_occurred_at: bool) {
    f.opt_short_text("context.tenantId", &c.tenant_id);
    f.opt_short_text("context.requestId", &c.request_id);
    f.opt_short_text("context.sessionId", &c.session_id);
    f.opt_short_text("context.service", &c.service);
    f.opt_short_text("context.environment", &c.environment);
    if let Some(t) = &c.trace_id {
        if !is_lower_hex(t, 32) {
            f.error("context.traceId", "must be 32 lowercase hex digits (W3C trace id)");
        }
    }
    if let Some(s) = &c.span_id {
        if !is_lower_hex(s, 16) {
            f.error("context.spanId", "must be 16 lowercase hex digits (W3C span id)");
        }
    }
    if let Some(ip) = &c.ip {
        if ip.parse::<IpAddr>().is_err() {
            f.error("context.ip", format!("{:?} is not an IPv4 or IPv6 address", truncate(ip, 64)));
        }
    }
    if let Some(ua) = &c.user_agent {
        f.text("context.userAgent", ua, 0, 1024);
    }
    if require_occurred_at && c.occurred_at.is_none() {
        f.error("context.occurredAt", "is required on a processed event");
    }
}

fn check_retention_tag(f: &mut Findings, tag: &Option<String>) {
    if let Some(tag) = tag {
        f.text("retentionTag", tag, 1, 64);
        let mut chars = tag.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !tag.is_empty()
            && (!first_ok || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'))
        {
            f.error("retentionTag", "may hold only lowercase letters, digits, _ and - (e.g. sox-7y)");
        }
    }
}

fn check_producer(f: &mut Findings, producer: &Option<ProducerInfo>) {
    if let Some(p) = producer {
        f.short_text("producer.id", &p.id);
        if p.seq > MAX_SAFE_INTEGER {
            f.error("producer.seq", format!("{} is above 2^53 - 1", p.seq));
        }
    }
}

fn check_schema_version(f: &mut Findings, version: u32) {
    if version == 0 {
        f.error("schemaVersion", "must be 1 or more");
    } else if version > SCHEMA_VERSION {
        f.error("schemaVersion", format!("{version} is newer than this reader understands ({SCHEMA_VERSION})"));
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

pub(crate) fn check_input(f: &mut Findings, input: &AuditEventInput, options: ValidationOptions) {
    if let Some(v) = input.schema_version {
        check_schema_version(f, v);
    }
    if let Some(id) = &input.event_id {
        check_event_id(f, "eventId", id);
    }
    check_action(f, &input.action, options);
    check_actor(f, &input.actor);
    check_target(f, &input.target);
    check_context(f, &input.context, false);
    check_retention_tag(f, &input.retention_tag);
    check_producer(f, &input.producer);
}

pub(crate) fn check_event(f: &mut Findings, e: &AuditEvent, options: ValidationOptions) {
    check_schema_version(f, e.schema_version);
    check_event_id(f, "eventId", &e.event_id);
    check_action(f, &e.action, options);
    check_actor(f, &e.actor);
    check_target(f, &e.target);
    check_context(f, &e.context, true);
    check_retention_tag(f, &e.retention_tag);
    check_producer(f, &e.producer);
    if f.errors.is_empty() && e.redaction.policy.is_empty() {
        f.error("redaction.policy", "must not be empty");
    }
    let i = &e.integrity;
    if i.alg != crate::chain::HASH_ALG {
        f.error("integrity.alg", format!("{:?} is not supported (only sha256)", truncate(&i.alg, 32)));
    }
    if i.chain.is_empty() {
        f.error("integrity.chain", "must not be empty");
    }
    if i.seq == 0 || i.seq > MAX_SAFE_INTEGER {
        f.error("integrity.seq", "must be between 1 and 2^53 - 1");
    }
    if !is_lower_hex(&i.prev_hash, 64) {
        f.error("integrity.prevHash", "must be 64 lowercase hex digits");
    }
    if !is_lower_hex(&i.hash, 64) {
        f.error("integrity.hash", "must be 64 lowercase hex digits");
    }
    if i.source.topic.is_empty() {
        f.error("integrity.source.topic", "must not be empty");
    }
    if i.source.partition < 0 {
        f.error("integrity.source.partition", "must not be negative");
    }
    if i.source.offset < 0 || i.source.offset as u64 > MAX_SAFE_INTEGER {
        f.error("integrity.source.offset", "must be between 0 and 2^53 - 1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_identifiers_embedded_in_actions() {
        assert_eq!(identifier_in_action("user.550e8400-e29b-41d4-a716-446655440000.login"), Some("a UUID"));
        assert_eq!(identifier_in_action("invoice.123456.update"), Some("a run of 5 or more digits"));
        assert_eq!(identifier_in_action("doc.9f86d0a1b84c7d65.read"), Some("a long hex string"));
        assert_eq!(identifier_in_action("billing.invoice.create"), None);
        assert_eq!(identifier_in_action("oauth2.token.refresh"), None);
        assert_eq!(identifier_in_action("user.authenticated"), None);
    }
}
