//! A realistic audit workload: the events a multi-tenant SaaS back end logs, for the end-to-end
//! bench (`tests/benches/end_to_end.rs`, `docs/PERFORMANCE.md`).
//!
//! Issue 21 found that the stage benches' small, repetitive events hid the cost of real ones: these
//! are about 1.3 KB of JSON as the producer sends them (id, time and producer fields included),
//! with secrets where real services leak them, so the processor's redaction and the stores' row
//! layout work on what they will meet in production.
//!
//! # The mix
//! | share | action | what it carries |
//! | --- | --- | --- |
//! | 25 % | `user.login` (20 % of them `FAILURE`) | the HTTP request (headers, cookies), the login body with the password and a one-time code |
//! | 20 % | `api.request` | the HTTP request with a bearer JWT, an `access_token` in a third of the query strings, the response's status, size and time |
//! | 12 % | `api_key.create` | the new key (`sk_live_…`), its scopes and expiry, the creating request |
//! | 15 % | `billing.payment_method.update` | card holder, brand, last four digits, expiry, IBAN, VAT id, billing address; a before/after diff |
//! | 18 % | `user.profile.update`, `document.update`, `role.assign` | the request; a before/after diff of the changed object |
//! | 10 % | `session.refresh` | the request with cookies and a refresh token in the body |
//!
//! About a third of the events (the billing and update kinds) carry a diff. Every event belongs to
//! one of [`Workload::TENANTS`] tenants (`context.tenantId`, uniformly), with a request id, session
//! id, client IP and user agent in its context; actors are drawn from 2,000 users per tenant.
//!
//! # Determinism
//! Event `i` of a workload depends only on the workload's seed and `i` (its own SplitMix64 stream),
//! so concurrent callers can each build the events they log, and the seed's Node script gets the
//! very same events from a file written by [`Workload::write_jsonl`]. Ids, times and producer fields
//! are not part of it: the producer library sets them.

use std::io::Write;

use audit_schema::{Actor, AuditEventInput, Context, Diff, Outcome, Target};
use serde_json::{json, Map, Value};

/// A seeded generator of realistic audit events.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    seed: u64,
}

/// SplitMix64: tiny, fast, and the same on every platform and crate version (unlike `rand`'s
/// generators, which may change between releases and would change the events).
#[derive(Debug)]
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// `len` characters of `alphabet`.
    fn text(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len).map(|_| alphabet[self.below(alphabet.len() as u64) as usize] as char).collect()
    }

    fn alnum(&mut self, len: usize) -> String {
        self.text(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", len)
    }

    fn base64url(&mut self, len: usize) -> String {
        self.text(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", len)
    }

    fn digits(&mut self, len: usize) -> String {
        self.text(b"0123456789", len)
    }

    fn ip(&mut self) -> String {
        format!(
            "{}.{}.{}.{}",
            [203, 198, 192, 100][self.below(4) as usize],
            self.below(256),
            self.below(256),
            1 + self.below(254)
        )
    }
}

const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "okhttp/4.12.0",
    "python-requests/2.32.3",
];
const LANGUAGES: &[&str] = &["en-US,en;q=0.9", "de-DE,de;q=0.9,en;q=0.8", "fr-FR,fr;q=0.9", "es-ES,es;q=0.8,en;q=0.5"];
const FIRST: &[&str] = &["Ada", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances", "Edsger", "Radia"];
const LAST: &[&str] =
    &["Lovelace", "Hopper", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie", "Allen", "Dijkstra"];
const CITIES: &[(&str, &str, &str)] = &[
    ("Berlin", "10115", "DE"),
    ("Paris", "75002", "FR"),
    ("Madrid", "28013", "ES"),
    ("Austin", "78701", "US"),
    ("Toronto", "M5V 2T6", "CA"),
];
const RESOURCES: &[&str] = &["invoices", "customers", "projects", "documents", "reports", "webhooks", "subscriptions"];
const SCOPES: &[&str] = &["read:invoices", "write:invoices", "read:customers", "write:customers", "admin:webhooks"];
const ROLES: &[&str] = &["viewer", "editor", "billing_admin", "owner", "support"];

impl Workload {
    /// Tenants the events are spread over.
    pub const TENANTS: u64 = 16;

    /// The workload of `seed`.
    pub fn new(seed: u64) -> Workload {
        Workload { seed }
    }

    /// Event `i`: the same for the same seed and `i`, whoever asks and in whatever order.
    pub fn event(&self, i: u64) -> AuditEventInput {
        let mut d = Draw(self.seed ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03));
        d.next();
        let tenant = d.below(Self::TENANTS);
        let user = d.below(2000);
        let user_id = format!("usr_{tenant:02}{user:05}");
        let email = format!("{}.{}{}@tenant{tenant:02}.example.com", d.pick(FIRST), d.pick(LAST), user).to_lowercase();
        let ip = d.ip();
        let agent = d.pick(USER_AGENTS).to_owned();
        let context = Context {
            tenant_id: Some(format!("tenant-{tenant:02}")),
            request_id: Some(format!("req_{}", d.alnum(20))),
            session_id: Some(format!("sess_{}", d.alnum(24))),
            ip: Some(ip.clone()),
            user_agent: Some(agent.clone()),
            ..Context::default()
        };
        let kind = d.below(100);
        let mut actor = Actor::new("user", user_id.clone());
        let (action, outcome, target, mut metadata, diff) = match kind {
            0..25 => {
                let failed = d.chance(20);
                let request = request(&mut d, "POST", "/api/v1/auth/login", &ip, &agent, false);
                let body = json!({
                    "email": email,
                    "password": d.alnum(14),
                    "rememberMe": d.chance(50),
                    "mfa": {"method": "totp", "otp": d.digits(6)}
                });
                let metadata = json!({
                    "request": request,
                    "body": body,
                    "result": if failed { json!({"status": 401, "reason": "invalid_credentials", "attempt": 1 + d.below(5)}) }
                              else { json!({"status": 200, "mfaVerified": true, "riskScore": d.below(100)}) }
                });
                let outcome = if failed { Outcome::Failure } else { Outcome::Success };
                ("user.login", outcome, Target::new("session", format!("sess_{}", d.alnum(16))), metadata, None)
            }
            25..45 => {
                let resource = d.pick(RESOURCES);
                let method = d.pick(&["GET", "GET", "GET", "POST", "PATCH", "DELETE"]);
                let id = format!("{}_{}", &resource[..3], d.alnum(12));
                let mut path = format!("/api/v2/{resource}/{id}");
                if d.chance(33) {
                    path.push_str(&format!("?expand=lines&access_token={}", d.base64url(32)));
                }
                if d.chance(30) {
                    actor = Actor::new("api_key", format!("key_{}", d.alnum(16)));
                }
                let metadata = json!({
                    "request": request(&mut d, method, &path, &ip, &agent, true),
                    "response": {"status": *[200, 200, 200, 201, 204, 404, 403].get(d.below(7) as usize).unwrap_or(&200),
                                 "bytes": d.below(80_000), "durationMs": d.below(900)}
                });
                ("api.request", Outcome::Success, Target::new(resource.trim_end_matches('s'), id), metadata, None)
            }
            45..57 => {
                let scopes: Vec<&str> = SCOPES.iter().copied().filter(|_| d.chance(50)).collect();
                let metadata = json!({
                    "request": request(&mut d, "POST", "/api/v1/api-keys", &ip, &agent, true),
                    "apiKey": format!("sk_live_{}", d.alnum(32)),
                    "name": format!("{} integration", d.pick(&["Zapier", "CI", "Warehouse sync", "Backoffice"])),
                    "scopes": scopes,
                    "expiresAt": format!("2027-{:02}-{:02}T00:00:00.000Z", 1 + d.below(12), 1 + d.below(28))
                });
                (
                    "api_key.create",
                    Outcome::Success,
                    Target::new("api_key", format!("key_{}", d.alnum(16))),
                    metadata,
                    None,
                )
            }
            57..72 => {
                let (city, zip, country) = CITIES[d.below(CITIES.len() as u64) as usize];
                let holder = format!("{} {}", d.pick(FIRST), d.pick(LAST));
                let card = |d: &mut Draw| {
                    json!({
                        "brand": d.pick(&["visa", "mastercard", "amex"]), "last4": d.digits(4),
                        "expMonth": 1 + d.below(12), "expYear": 2027 + d.below(6)
                    })
                };
                let before = json!({"card": card(&mut d), "billingEmail": email});
                let after = json!({"card": card(&mut d), "billingEmail": email});
                let metadata = json!({
                    "request": request(&mut d, "PUT", "/api/v1/billing/payment-method", &ip, &agent, false),
                    "billing": {
                        "cardholderName": holder,
                        "iban": format!("{country}{}{}", d.digits(2), d.digits(18)),
                        "vatId": format!("{country}{}", d.digits(9)),
                        "address": {"line1": format!("{} Market Street", 1 + d.below(400)), "city": city, "postalCode": zip, "country": country},
                        "amountDue": {"value": d.below(500_000) as f64 / 100.0, "currency": "EUR"}
                    }
                });
                let diff = Diff { before: Some(before), after: Some(after) };
                (
                    "billing.payment_method.update",
                    Outcome::Success,
                    Target::new("customer", format!("cus_{}", d.alnum(14))),
                    metadata,
                    Some(diff),
                )
            }
            72..90 => {
                let bearer = d.chance(50);
                let request = request(&mut d, "PATCH", "/api/v1/resources", &ip, &agent, bearer);
                let (action, target, before, after) = match d.below(3) {
                    0 => (
                        "user.profile.update",
                        Target::new("user", user_id.clone()),
                        json!({"displayName": format!("{} {}", d.pick(FIRST), d.pick(LAST)), "phone": format!("+49 30 {}", d.digits(8)), "locale": "en-US", "timezone": "Europe/Berlin"}),
                        json!({"displayName": format!("{} {}", d.pick(FIRST), d.pick(LAST)), "phone": format!("+49 30 {}", d.digits(8)), "locale": "de-DE", "timezone": "Europe/Berlin"}),
                    ),
                    1 => (
                        "document.update",
                        Target::new("document", format!("doc_{}", d.alnum(14))),
                        json!({"title": format!("Q{} plan {}", 1 + d.below(4), d.alnum(6)), "status": "draft", "version": 3 + d.below(40), "sharedWith": [format!("usr_{tenant:02}{:05}", d.below(2000))]}),
                        json!({"title": format!("Q{} plan {}", 1 + d.below(4), d.alnum(6)), "status": "review", "version": 4 + d.below(40), "sharedWith": [format!("usr_{tenant:02}{:05}", d.below(2000)), format!("usr_{tenant:02}{:05}", d.below(2000))]}),
                    ),
                    _ => (
                        "role.assign",
                        Target::new("user", format!("usr_{tenant:02}{:05}", d.below(2000))),
                        json!({"roles": [d.pick(ROLES)], "grantedBy": null}),
                        json!({"roles": [d.pick(ROLES), d.pick(ROLES)], "grantedBy": user_id}),
                    ),
                };
                let metadata = json!({"request": request, "reason": d.pick(&["customer request", "scheduled review", "support ticket", "self service"])});
                (action, Outcome::Success, target, metadata, Some(Diff { before: Some(before), after: Some(after) }))
            }
            _ => {
                let metadata = json!({
                    "request": request(&mut d, "POST", "/api/v1/auth/refresh", &ip, &agent, false),
                    "body": {"refreshToken": format!("rt_{}", d.base64url(43)), "grantType": "refresh_token"},
                    "result": {"status": 200, "expiresIn": 3600}
                });
                (
                    "session.refresh",
                    Outcome::Success,
                    Target::new("session", format!("sess_{}", d.alnum(16))),
                    metadata,
                    None,
                )
            }
        };
        if actor.kind == "user" {
            actor.name = Some(email);
            actor.roles = Some(vec![d.pick(ROLES).to_owned()]);
        }
        if let Some(m) = metadata.as_object_mut() {
            m.insert("region".into(), Value::from(d.pick(&["eu-central-1", "eu-west-1", "us-east-1"])));
        }
        let mut event = AuditEventInput::new(action, outcome, actor);
        event.target = Some(target);
        event.context = context;
        event.metadata = match metadata {
            Value::Object(m) => Some(m),
            _ => None,
        };
        event.diff = diff;
        event
    }

    /// Writes events `range` as JSON lines (the input form: what `log` is given).
    pub fn write_jsonl(&self, range: std::ops::Range<u64>, out: impl Write) -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(out);
        for i in range {
            serde_json::to_writer(&mut out, &self.event(i))?;
            out.write_all(b"\n")?;
        }
        out.flush()
    }
}

/// An HTTP request as a web framework's audit middleware records it: method, path, and the
/// headers, cookies and bearer tokens included.
fn request(d: &mut Draw, method: &str, path: &str, ip: &str, agent: &str, bearer: bool) -> Value {
    let mut headers = Map::new();
    headers.insert("host".into(), Value::from("api.example.com"));
    headers.insert("user-agent".into(), Value::from(agent));
    headers.insert("accept".into(), Value::from("application/json, text/plain, */*"));
    headers.insert("accept-language".into(), Value::from(d.pick(LANGUAGES)));
    headers.insert("content-type".into(), Value::from("application/json"));
    headers.insert("x-forwarded-for".into(), Value::from(format!("{ip}, 10.0.{}.{}", d.below(256), d.below(256))));
    if bearer {
        let jwt = format!("eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.{}.{}", d.base64url(64), d.base64url(43));
        headers.insert("authorization".into(), Value::from(format!("Bearer {jwt}")));
    } else {
        let cookie = format!(
            "session={}; csrftoken={}; _ga=GA1.2.{}.{}",
            d.base64url(40),
            d.alnum(32),
            d.digits(10),
            d.digits(10)
        );
        headers.insert("cookie".into(), Value::from(cookie));
    }
    json!({"method": method, "path": path, "headers": headers})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_sent(e: &AuditEventInput) -> usize {
        // What `log` adds: the id, the time, the service and the producer fields (~190 bytes).
        serde_json::to_vec(e).expect("json").len() + 190
    }

    #[test]
    fn the_same_seed_and_index_give_the_same_event() {
        let (a, b) = (Workload::new(21), Workload::new(21));
        for i in [0, 1, 999, 123_456] {
            assert_eq!(a.event(i), b.event(i));
        }
        assert_ne!(Workload::new(22).event(5), a.event(5));
    }

    #[test]
    fn the_mix_is_the_one_documented() {
        let w = Workload::new(21);
        let n = 20_000u64;
        let events: Vec<_> = (0..n).map(|i| w.event(i)).collect();
        let mean = events.iter().map(as_sent).sum::<usize>() as f64 / n as f64;
        assert!((1200.0..1400.0).contains(&mean), "mean size as sent {mean}");
        let diffs = events.iter().filter(|e| e.diff.is_some()).count() as f64 / n as f64;
        assert!((0.30..0.36).contains(&diffs), "share with a diff {diffs}");
        let tenants: std::collections::BTreeSet<_> = events.iter().map(|e| e.context.tenant_id.clone()).collect();
        assert_eq!(tenants.len() as u64, Workload::TENANTS);
        let text: String = events.iter().take(200).map(|e| serde_json::to_string(e).expect("json")).collect();
        for secret in ["\"password\"", "Bearer eyJ", "\"cookie\"", "sk_live_", "\"iban\"", "access_token="] {
            assert!(text.contains(secret), "{secret} in the mix");
        }
    }
}
