//! Keys and tokens that their issuer marks with a prefix (`AKIA`, `ghp_`, `xoxb-`, `sk_live_`,
//! `sk-ant-`, `npm_`, `SG.` …): cloud, source-host, chat, payment, AI, package-registry and
//! messaging providers, one `redaction.detectors` family each, and the checks that tell their
//! random bodies from words and hashes.

use super::{Check as C, Family as F, Gate as G, Spec};

/// The prefixed-key detectors, by family.
pub(super) const SPECS: &[Spec] = &[
    // Cloud keys.
    Spec {
        name: "aws_access_key_id",
        family: F::CloudKeys,
        gate: G::Literals(&["AKIA", "ASIA", "ABIA", "ACCA"]),
        regex: r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\b",
        check: C::Format,
    },
    Spec {
        name: "aws_secret_access_key",
        family: F::CloudKeys,
        gate: G::Literals(&["AKIA", "ASIA", "ABIA", "ACCA"]),
        regex: r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\b(?s:.{0,100}?)[^A-Za-z0-9/+](?P<secret>[A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|\z)",
        check: C::Random,
    },
    Spec {
        name: "aws_secret_access_key",
        family: F::CloudKeys,
        gate: G::Literals(&["access_key", "accesskey", "access-key", "access key"]),
        regex: r#"(?i:secret[_ -]?access[_ -]?key)["']?\s*(?:[:=]|=>)\s*["']?(?P<secret>[A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|\z)"#,
        check: C::Random,
    },
    Spec {
        name: "google_api_key",
        family: F::CloudKeys,
        gate: G::Literals(&["AIza"]),
        regex: r"\b(?P<secret>AIza[0-9A-Za-z_-]{35})(?:[^0-9A-Za-z_-]|\z)",
        check: C::Format,
    },
    Spec {
        name: "azure_storage_key",
        family: F::CloudKeys,
        gate: G::Literals(&["AccountKey", "SharedAccessKey"]),
        regex: r"(?i:AccountKey|SharedAccessKey)\s*=\s*(?P<secret>[A-Za-z0-9+/]{40,86}={0,2})",
        check: C::Random,
    },
    // Source hosts.
    Spec {
        name: "github_classic_token",
        family: F::SourceHostTokens,
        gate: G::Literals(&["ghp_"]),
        regex: r"\bghp_[A-Za-z0-9]{36}\b",
        check: C::Format,
    },
    Spec {
        name: "github_fine_grained_token",
        family: F::SourceHostTokens,
        gate: G::Literals(&["github_pat_"]),
        regex: r"\bgithub_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}\b",
        check: C::Format,
    },
    Spec {
        name: "github_app_token",
        family: F::SourceHostTokens,
        gate: G::Literals(&["gho_", "ghu_", "ghs_", "ghr_"]),
        regex: r"\bgh[ousr]_[A-Za-z0-9]{36,}\b",
        check: C::Format,
    },
    Spec {
        name: "gitlab_token",
        family: F::SourceHostTokens,
        gate: G::Literals(&[
            "glpat-",
            "gldt-",
            "glrt-",
            "glcbt-",
            "glptt-",
            "glft-",
            "glimt-",
            "glagent-",
            "gloas-",
            "glsoat-",
            "glffct-",
            "GR1348941",
        ]),
        regex: r"\b(?:gl(?:pat|dt|rt|cbt|ptt|ft|imt|agent|oas|soat|ffct)-|GR1348941)[0-9A-Za-z_-]{20,}(?:\.[0-9A-Za-z_-]+)*",
        check: C::Format,
    },
    // Chat.
    Spec {
        name: "slack_token",
        family: F::ChatTokens,
        gate: G::Literals(&["xox", "xapp-"]),
        regex: r"\b(?:(?:xox[abcenprs]|xapp)-[0-9]+-[0-9A-Za-z-]{10,}|xoxd-[0-9A-Za-z%/+=]{20,})",
        check: C::Format,
    },
    Spec {
        name: "slack_webhook",
        family: F::ChatTokens,
        gate: G::Literals(&["hooks.slack.com"]),
        regex: r"hooks\.slack\.com/(?:services|workflows|triggers)/(?P<secret>[A-Za-z0-9_/-]{20,})",
        check: C::Format,
    },
    // Payment.
    Spec {
        name: "stripe_secret_key",
        family: F::PaymentKeys,
        gate: G::Literals(&["sk_live_", "sk_test_", "rk_live_", "rk_test_"]),
        regex: r"\b[rs]k_(?:live|test)_[0-9A-Za-z]{24,}\b",
        check: C::Format,
    },
    Spec {
        name: "stripe_webhook_secret",
        family: F::PaymentKeys,
        gate: G::Literals(&["whsec_"]),
        regex: r"\bwhsec_[A-Za-z0-9+/]{32,}={0,2}",
        check: C::Format,
    },
    // AI providers (Anthropic's `sk-ant-` before OpenAI's `sk-`).
    Spec {
        name: "anthropic_api_key",
        family: F::AiKeys,
        gate: G::Literals(&["sk-ant-"]),
        regex: r"\bsk-ant-[a-z]+[0-9]{2}-[A-Za-z0-9_-]{32,}",
        check: C::Format,
    },
    Spec {
        name: "openai_api_key",
        family: F::AiKeys,
        gate: G::Literals(&["sk-"]),
        regex: r"\bsk-(?:(?:proj|svcacct|admin)-)?[A-Za-z0-9_-]{20,}",
        check: C::OpenAi,
    },
    Spec {
        name: "huggingface_token",
        family: F::AiKeys,
        gate: G::Literals(&["hf_"]),
        regex: r"\b(?P<secret>hf_[A-Za-z0-9]{34,})\b",
        check: C::Random,
    },
    // Package registries.
    Spec {
        name: "npm_token",
        family: F::RegistryTokens,
        gate: G::Literals(&["npm_"]),
        regex: r"\bnpm_[A-Za-z0-9]{36}\b",
        check: C::Format,
    },
    Spec {
        name: "pypi_token",
        family: F::RegistryTokens,
        gate: G::Literals(&["pypi-AgE"]),
        regex: r"\bpypi-AgE(?:IcHlwaS5vcmc|NdGVzdC5weXBpLm9yZw)[A-Za-z0-9_-]{50,}",
        check: C::Format,
    },
    Spec {
        name: "dockerhub_token",
        family: F::RegistryTokens,
        gate: G::Literals(&["dckr_pat_"]),
        regex: r"\bdckr_pat_[A-Za-z0-9_-]{27,}",
        check: C::Format,
    },
    // Mail and SMS providers.
    Spec {
        name: "sendgrid_api_key",
        family: F::MessagingKeys,
        gate: G::Literals(&["SG."]),
        regex: r"\b(?P<secret>SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43})(?:[^A-Za-z0-9_-]|\z)",
        check: C::Format,
    },
    // Twilio's SIDs are `AC`/`SK` + 32 hex, like many hashes: only in a string that names Twilio.
    Spec {
        name: "twilio_key",
        family: F::MessagingKeys,
        gate: G::Literals(&["twilio"]),
        regex: r"\b(?:AC|SK)[0-9a-f]{32}\b",
        check: C::Format,
    },
    Spec {
        name: "twilio_key",
        family: F::MessagingKeys,
        gate: G::Literals(&["twilio"]),
        regex: r#"(?i:auth[_ -]?token|api[_ -]?secret)["']?\s*[:=]\s*["']?(?P<secret>[0-9a-f]{32})\b"#,
        check: C::Format,
    },
];

/// Upper and lower case letters: base62 and base64 secrets have both, hex hashes, words in
/// identifiers and numbers do not.
pub(super) fn looks_random(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter().any(u8::is_ascii_uppercase) && b.iter().any(u8::is_ascii_lowercase)
}

/// See [`super::Check::OpenAi`].
pub(super) fn openai_key(m: &str) -> bool {
    let body = m.strip_prefix("sk-").unwrap_or(m);
    if body.contains("T3BlbkFJ") {
        return true;
    }
    let typed = ["proj-", "svcacct-", "admin-"].iter().find_map(|p| body.strip_prefix(p));
    match typed {
        Some(rest) => rest.len() >= 40 && looks_random(rest),
        None => body.len() >= 32 && body.bytes().all(|b| b.is_ascii_alphanumeric()) && looks_random(body),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{all_on, fill, finds, keeps, scan};
    use super::*;

    #[test]
    fn openai_keys_need_a_marker_a_type_or_randomness() {
        let random = "EXAMPLEk3y9".repeat(5);
        assert!(openai_key(&format!("sk-{}", &random[..48])));
        assert!(openai_key(&format!("sk-proj-{}", &random[..50])));
        assert!(openai_key(&format!("sk-{}T3BlbkFJ{}", "a".repeat(20), "b".repeat(20))));
        assert!(!openai_key("sk-learn-tutorial-for-beginners-2024"), "words");
        assert!(!openai_key("sk-abcdefghijklmnopqrstuvwxyzabcdefgh"), "one case, no digit");
        assert!(!openai_key("sk-550e8400-e29b-41d4-a716-446655440000"), "a UUID");
    }

    #[test]
    fn cloud_keys() {
        let id = "AKIAEXAMPLEKEY234567";
        let secret = fill("EXAMPLEsecret/Key+0123", 40);
        finds("aws_access_key_id", &format!("rotated {id} today"), id);
        finds("aws_access_key_id", "temp ASIAEXAMPLE7TEMP2345.", "ASIAEXAMPLE7TEMP2345");
        finds("aws_secret_access_key", &format!("{id}:{secret}"), &secret);
        finds("aws_secret_access_key", &format!("keys {id} and, later, {secret} done"), &secret);
        finds("aws_secret_access_key", &format!("aws_secret_access_key = \"{secret}\""), &secret);
        finds("aws_secret_access_key", &format!("{{SecretAccessKey: '{secret}'}}"), &secret);
        let google = format!("AIza{}", fill("SyEXAMPLE-key_0123456789", 35));
        finds("google_api_key", &format!("maps?key={google}&v=3"), &google);
        let account_key = fill("EXAMPLEkey0123+/", 86);
        finds(
            "azure_storage_key",
            &format!("DefaultEndpointsProtocol=https;AccountName=examplestore;AccountKey={account_key}==;EndpointSuffix=core.windows.net"),
            &account_key,
        );
        let shared = fill("EXAMPLEsharedKey0+/", 43);
        finds(
            "azure_storage_key",
            &format!("Endpoint=sb://example.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={shared}="),
            &shared,
        );
        // Near misses: wrong length, wrong alphabet, no context.
        keeps("AKIAEXAMPLEKEY23456 is 19 characters");
        keeps("AKIAEXAMPLEKEY2345678 is 21");
        keeps("AKIAEXAMPLEKEY234518 has 1 and 8, not base32");
        keeps("TZ=Asia/Tokyo and ASIA-PACIFIC");
        keeps(&format!("a git commit {} near nothing", fill("0123456789abcdef", 40)));
        keeps(&format!("AKIA… then sha {}", fill("0123456789abcdef", 40)));
        keeps(&format!("AIza{}", fill("SyEXAMPLE", 34)));
        keeps("AccountKey=tooShort==");
    }

    #[test]
    fn source_host_tokens() {
        let classic = format!("ghp_{}", fill("EXAMPLE0token1", 36));
        finds("github_classic_token", &format!("GITHUB_TOKEN: {classic}"), &classic);
        let fine = format!("github_pat_{}_{}", fill("EXAMPLE01", 22), fill("EXAMPLEfine0grained", 59));
        finds("github_fine_grained_token", &format!("token={fine}"), &fine);
        for prefix in ["gho_", "ghu_", "ghs_", "ghr_"] {
            let token = format!("{prefix}{}", fill("EXAMPLE0app1", 36));
            finds("github_app_token", &format!("installation {token} issued"), &token);
        }
        let gitlab = format!("glpat-{}", fill("EXAMPLExample_1234", 20));
        finds("gitlab_token", &format!("clone with {gitlab}"), &gitlab);
        let deploy = format!("gldt-{}", fill("EXAMPLE-deploy", 24));
        finds("gitlab_token", &format!("deploy token {deploy}"), &deploy);
        let runner = format!("GR1348941{}", fill("EXAMPLErunner", 20));
        finds("gitlab_token", &format!("register {runner}"), &runner);
        keeps(&format!("ghp_{}", fill("EXAMPLE0token1", 35)));
        keeps(&format!("ghp_{}", fill("EXAMPLE0token1", 37)));
        keeps("ghp_EXAMPLE-token-with-dashes-0123456789ab");
        keeps(&format!("glpat-{}", fill("EXAMPLE", 19)));
        keeps("the ghost_protocol and glpat-short");
    }

    #[test]
    fn chat_tokens() {
        let bot = format!("xoxb-123456789012-1234567890123-{}", fill("EXAMPLEtoken", 24));
        finds("slack_token", &format!("bot {bot} posted"), &bot);
        let user = format!("xoxp-1234567890-1234567890-1234567890123-{}", fill("0123456789abcdef", 32));
        finds("slack_token", &user, &user);
        let app = format!("xapp-1-A0EXAMPLE1-1234567890123-{}", fill("0123456789abcdef", 64));
        finds("slack_token", &format!("socket mode {app}"), &app);
        let hook = format!("T00EXAMPLE/B00EXAMPLE/{}", fill("EXAMPLEsecret", 24));
        let (out, _) = scan(&all_on(), &format!("POST https://hooks.slack.com/services/{hook}"));
        assert_eq!(out, "POST https://hooks.slack.com/services/***", "the host stays visible");
        finds("slack_webhook", &format!("https://hooks.slack.com/services/{hook}"), &hook);
        keeps("xoxb-notatoken and xoxo-123-hugs-and-kisses");
        keeps("see https://hooks.slack.com/services/ for setup");
    }

    #[test]
    fn payment_keys() {
        for prefix in ["sk_live_", "rk_live_", "sk_test_", "rk_test_"] {
            let key = format!("{prefix}{}", fill("EXAMPLE0key", 24));
            finds("stripe_secret_key", &format!("curl https://api.stripe.com -H 'k: {key}'"), &key);
        }
        let long = format!("sk_live_{}", fill("EXAMPLE0long1key", 99));
        finds("stripe_secret_key", &long, &long);
        let hook = format!("whsec_{}", fill("EXAMPLE0webhook+/", 32));
        finds("stripe_webhook_secret", &format!("endpoint secret {hook}"), &hook);
        keeps(&format!("sk_live_{}", fill("EXAMPLE0key", 23)));
        keeps("sk_test_YOUR_KEY_HERE");
        keeps("whsec_tooShort0123");
        keeps(&format!("publishable pk_live_{}", fill("EXAMPLE0key", 24)));
    }

    #[test]
    fn ai_keys() {
        let anthropic = format!("sk-ant-api03-{}AA", fill("EXAMPLE_key-0123", 93));
        finds("anthropic_api_key", &format!("x-api: {anthropic}"), &anthropic);
        let project = format!("sk-proj-{}", fill("EXAMPLEk3y9_-", 120));
        finds("openai_api_key", &format!("OPENAI {project}"), &project);
        let marked = format!("sk-{}T3BlbkFJ{}", fill("EXAMPLE0key1", 20), fill("EXAMPLE2key3", 20));
        finds("openai_api_key", &format!("key {marked}."), &marked);
        let plain = format!("sk-{}", fill("EXAMPLEkey01", 48));
        finds("openai_api_key", &plain, &plain);
        let service = format!("sk-svcacct-{}", fill("EXAMPLEsvc0", 64));
        finds("openai_api_key", &service, &service);
        let hf = format!("hf_{}", fill("EXAMPLEtokenValue", 34));
        finds("huggingface_token", &format!("HF {hf}"), &hf);
        keeps("task-list, skeleton, risk-based, desk-booking, ask-me-anything");
        keeps("pip install sk-learn-tutorial-for-beginners-2024");
        keeps("sk-abcdefghijklmnopqrstuvwxyzabcdefgh");
        keeps("trace sk-550e8400-e29b-41d4-a716-446655440000");
        keeps(&format!("sk-ant-api03-{}", fill("EXAMPLE", 10)));
        keeps("hf_hubdownloadcachedirectorysettings and hf_transfer");
    }

    #[test]
    fn registry_and_messaging_keys() {
        let npm = format!("npm_{}", fill("EXAMPLE0token", 36));
        finds("npm_token", &format!("//registry.npmjs.org/:_authToken={npm}"), &npm);
        let pypi = format!("pypi-AgEIcHlwaS5vcmc{}", fill("CJEXAMPLE-token_0123", 60));
        finds("pypi_token", &format!("password = {pypi}"), &pypi);
        let test_pypi = format!("pypi-AgENdGVzdC5weXBpLm9yZw{}", fill("CJEXAMPLE", 60));
        finds("pypi_token", &test_pypi, &test_pypi);
        let docker = format!("dckr_pat_{}", fill("EXAMPLE-tok_en", 27));
        finds("dockerhub_token", &format!("docker login -p {docker}"), &docker);
        let sendgrid = format!("SG.{}.{}", fill("EXAMPLEkey_0", 22), fill("EXAMPLEsecret-0123", 43));
        finds("sendgrid_api_key", &format!("mail via {sendgrid}"), &sendgrid);
        let sid = format!("SK{}", fill("0123456789abcdef", 32));
        finds("twilio_key", &format!("twilio api key {sid}"), &sid);
        let account = format!("AC{}", fill("abcdef0123456789", 32));
        finds("twilio_key", &format!("Twilio account {account}"), &account);
        let auth = fill("0123456789abcdef", 32);
        finds("twilio_key", &format!("twilio authToken='{auth}'"), &auth);
        keeps(&format!("npm_{}", fill("EXAMPLE0token", 35)));
        keeps("npm_config_registry and pypi-package-name and pypi-AgEIcHlwaS5vcmcshort");
        keeps(&format!("SG.{}.{}", fill("EXAMPLEkey_0", 22), fill("EXAMPLE", 42)));
        keeps("msg.send and SG.team");
        keeps("dckr_pat_short and docker_pat_EXAMPLE");
        keeps(&format!("md5 SK{} without the provider named", fill("0123456789abcdef", 32)));
    }
}
