//! Credentials in URLs and command lines: the password of `scheme://user:password@host`, and
//! `curl -u user:password`. (URL parameters that name a secret, `?token=…`, are key-named:
//! [`super::key_named`].)

use super::{Check as C, Family as F, Gate as G, Spec};

/// The URL and command-line detectors.
pub(super) const SPECS: &[Spec] = &[
    Spec {
        name: "url_credentials",
        family: F::UrlCredentials,
        gate: G::LiteralsAnd(&["://"], b'@'),
        regex: r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:(?P<secret>[^\s@/]+)@",
        check: C::Format,
    },
    Spec {
        name: "curl_credentials",
        family: F::UrlCredentials,
        gate: G::Literals(&["curl"]),
        regex: r#"\bcurl\b[^\r\n]*?[ \t](?:-u[ \t]*|--user(?:[ \t]+|=))["']?(?:[^\s:"']*:)?(?P<secret>[^\s"']+)"#,
        check: C::Format,
    },
];

#[cfg(test)]
mod tests {
    use super::super::test_support::{all_on, fill, finds, keeps, scan};

    #[test]
    fn credentials_in_urls_and_command_lines() {
        let (out, _) = scan(&all_on(), "cache at redis://:EXAMPLEpass@cache:6379/0");
        assert_eq!(out, "cache at redis://:***@cache:6379/0", "an empty user");
        finds("url_credentials", "amqp://guest:EXAMPLEpw@mq.internal/vhost", "EXAMPLEpw");
        finds("url_credentials", "mongodb+srv://app:EXAMPLE%40pw@cluster0.example.net/db", "EXAMPLE%40pw");
        let presigned = format!(
            "https://bucket.s3.amazonaws.com/o?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature={}&x=1",
            fill("0123456789abcdef", 64)
        );
        let (out, by_rule) = scan(&all_on(), &presigned);
        assert!(out.ends_with("X-Amz-Signature=***&x=1"), "{out}");
        assert_eq!(by_rule.get("url_credentials"), Some(&1));
        finds("url_credentials", "https://store.example.net/c?sv=2024&sig=EXAMPLEsig%3D", "EXAMPLEsig%3D");
        let (out, _) = scan(&all_on(), "curl -u ada:EXAMPLEpass https://api.example.com/v1");
        assert_eq!(out, "curl -u ada:*** https://api.example.com/v1", "the user stays visible");
        finds("curl_credentials", "curl -s --user=ada:EXAMPLEpw https://x", "EXAMPLEpw");
        finds("curl_credentials", "curl -X POST https://api.example.com --user 'ops:EXAMPLEpw'", "EXAMPLEpw");
        finds("curl_credentials", "curl -uada:EXAMPLEpw https://x", "EXAMPLEpw");
        keeps("https://example.com:8443/path?page=2&tokens_used=3");
        keeps("git@github.com:org/repo.git and mailto:ada@example.com");
        keeps("curl --user-agent Mozilla -H 'Accept: json' https://x");
    }
}
