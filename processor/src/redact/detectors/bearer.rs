//! Credentials after an auth scheme: `Authorization:` header lines (first of all the token
//! formats, so a header is counted as a header whatever it carries), JWTs by their shape, and
//! `Bearer`/`Basic`/`Token` schemes in text.

use super::{Check as C, Family as F, Gate as G, Spec};

/// `Authorization:` header lines: everything after the scheme, to the end of the line (Digest) or
/// of the quoted value. Before the token formats: a header is counted as a header, whatever
/// credential it carries.
pub(super) const AUTHORIZATION_HEADERS: &[Spec] = &[
    Spec {
        name: "authorization_header",
        family: F::BearerTokens,
        gate: G::Literals(&["authorization"]),
        regex: r#"(?i)\b(?:proxy-)?authorization["']?[ \t]*(?::|=>?)[ \t]*["']?digest[ \t]+(?P<secret>[^\r\n]+)"#,
        check: C::Format,
    },
    Spec {
        name: "authorization_header",
        family: F::BearerTokens,
        gate: G::Literals(&["authorization"]),
        regex: r#"(?i)\b(?:proxy-)?authorization["']?[ \t]*(?::|=>?)[ \t]*["']?(?:[a-z][a-z0-9._-]*[ \t]+)?(?P<secret>[^\s"',;][^\r\n"']*)"#,
        check: C::Format,
    },
];

/// Tokens by their shape anywhere in text.
pub(super) const TOKENS: &[Spec] = &[
    Spec {
        name: "jwt",
        family: F::BearerTokens,
        gate: G::LiteralsAnd(&["eyJ"], b'.'),
        regex: r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*)?",
        check: C::Format,
    },
    Spec {
        name: "bearer",
        family: F::BearerTokens,
        // The scheme and the whitespace after it (`token=` in a query is not a scheme).
        gate: G::Literals(&[
            "bearer ", "bearer\t", "bearer\n", "bearer\r", "basic ", "basic\t", "basic\n", "basic\r", "token ",
            "token\t", "token\n", "token\r",
        ]),
        regex: r"(?i)\b(?:bearer|basic|token)\s+(?P<secret>[A-Za-z0-9\-._~+/]{8,}=*)",
        check: C::Credential,
    },
];

#[cfg(test)]
mod tests {
    use super::super::test_support::{all_on, fill, finds, keeps, scan};

    #[test]
    fn tokens_and_headers_in_raw_text() {
        let jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJFWEFNUExFIn0.RVhBTVBMRXNpZ25hdHVyZQ";
        finds("jwt", &format!("id_token was {jwt} (expired)"), jwt);
        let request =
            "GET /v1 HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Basic ZXhhbXBsZTpFWEFNUExF\r\nAccept: */*";
        let (out, by_rule) = scan(&all_on(), request);
        assert_eq!(out, "GET /v1 HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Basic ***\r\nAccept: */*");
        assert_eq!(by_rule.get("authorization_header"), Some(&1), "{by_rule:?}");
        finds("authorization_header", "authorization: Bearer EXAMPLEopaque.token_value", "EXAMPLEopaque.token_value");
        let sigv4 = format!(
            "Authorization: AWS4-HMAC-SHA256 Credential=AKIAEXAMPLEKEY234567/20250101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature={}",
            fill("0123456789abcdef", 64)
        );
        let (out, _) = scan(&all_on(), &sigv4);
        assert_eq!(out, "Authorization: AWS4-HMAC-SHA256 ***");
        let digest = r#"Proxy-Authorization: Digest username="ada", realm="example", nonce="EXAMPLEnonce", response="0123456789abcdef0123456789abcdef""#;
        let (out, _) = scan(&all_on(), digest);
        assert_eq!(out, "Proxy-Authorization: Digest ***");
        let (out, _) = scan(&all_on(), "{'Authorization': 'Token EXAMPLE0123opaque', 'Accept': 'json'}");
        assert_eq!(out, "{'Authorization': 'Token ***', 'Accept': 'json'}");
        finds("bearer", "sent Bearer EXAMPLE0123.opaque to the API", "EXAMPLE0123.opaque");
        keeps("Authorization failed for user ada; Basic authentication is off; token expired yesterday");
        keeps("header eyJhbGciOiJIUzI1NiJ9 alone, and eyJ.x.y too short");
        keeps("the bearer tokens were refreshed successfully");
    }
}
