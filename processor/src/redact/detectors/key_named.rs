//! Detectors that find a secret by the key named before it: `KEY=value` lines of env files,
//! `password: value` in YAML, INI and running text, and URL parameters and form fields
//! (`?token=…`, `&password=…`, `--password=…`). The policy's key-name matcher decides whether the
//! name names a secret (with the measure rule); [`super::assignments`] is their prefilter.

use super::assignments::Assignment;
use super::{Check as C, Family as F, Gate as G, Spec};

/// The key-named detectors, last: a secret another detector recognises is counted under it.
pub(super) const SPECS: &[Spec] = &[
    // `KEY=value` lines of env files, `password: value` lines of YAML, INI `password = value`:
    // to the end of the line.
    Spec {
        name: "secret_assignment",
        family: F::EnvAssignments,
        gate: G::KeyWords(Assignment::Line),
        regex: r#"(?m)^[ \t]*(?:export[ \t]+|set[ \t]+|-[ \t]+)?["']?(?P<name>[A-Za-z_][A-Za-z0-9_.\[\]-]*)["']?[ \t]*(?:=|:[ \t])[ \t]*(?P<secret>[^\s#][^\r\n]*)"#,
        check: C::KeyName,
    },
    // `name: value` inside a line (`password: hunter2, user: ada`, `{password: 'x'}`; not
    // `scheme://`).
    Spec {
        name: "secret_assignment",
        family: F::EnvAssignments,
        gate: G::KeyWords(Assignment::Inline),
        regex: r#"(?:^|[\s,;{(])["']?(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)["']?[ \t]*:[ \t]*(?P<secret>"[^"\r\n]*"|'[^'\r\n]*'|/?[^\s,;})"'/][^\s,;})"']*)"#,
        check: C::KeyName,
    },
    // URL parameters and form fields (`?token=…`, `&password=…`), and `--password=…` flags.
    Spec {
        name: "url_credentials",
        family: F::UrlCredentials,
        gate: G::KeyWords(Assignment::Query),
        regex: r#"[?&;\t ](?P<name>[A-Za-z0-9_.\[\]-]+)=(?P<secret>[^&\s#;"'<>]+)"#,
        check: C::QueryName,
    },
];

#[cfg(test)]
mod tests {
    use super::super::test_support::{all_on, keeps, scan};

    #[test]
    fn assignments_in_env_yaml_and_ini_text_where_the_key_names_a_secret() {
        let env = "APP_NAME=billing\nDB_PASSWORD=EXAMPLE pass phrase\nexport STRIPE_SECRET=\"EXAMPLEquoted\"\nPASSWORD_LENGTH=12\nMAX_TOKENS=4096\nPIN=1234\n";
        let (out, by_rule) = scan(&all_on(), env);
        assert_eq!(
            out,
            "APP_NAME=billing\nDB_PASSWORD=***\nexport STRIPE_SECRET=\"***\"\nPASSWORD_LENGTH=12\nMAX_TOKENS=4096\nPIN=***\n"
        );
        assert_eq!(by_rule.get("secret_assignment"), Some(&3), "{by_rule:?}");
        let yaml = "database:\n  host: db.internal\n  password: EXAMPLE pass # prod\n  pool_size: 5\n  api_key: 'EXAMPLEkey'\n";
        let (out, _) = scan(&all_on(), yaml);
        assert_eq!(out, "database:\n  host: db.internal\n  password: ***\n  pool_size: 5\n  api_key: '***'\n");
        let ini = "[smtp]\r\nuser = ada\r\npass = EXAMPLEpw\r\ncompass = north\r\n";
        let (out, _) = scan(&all_on(), ini);
        assert_eq!(out, "[smtp]\r\nuser = ada\r\npass = ***\r\ncompass = north\r\n");
        let (out, _) = scan(&all_on(), "login failed for ada, password: EXAMPLEpw, retrying");
        assert_eq!(out, "login failed for ada, password: ***, retrying");
        let (out, _) = scan(&all_on(), "{user: 'ada', passwd: 'EXAMPLEpw'}");
        assert_eq!(out, "{user: 'ada', passwd: '***'}");
        let (out, _) = scan(&all_on(), "{\n  \"password\": \"EXAMPLE pw\",\n  \"user\": \"ada\",\n");
        assert_eq!(out, "{\n  \"password\": \"***\",\n  \"user\": \"ada\",\n", "broken JSON keeps its quotes");
        keeps("passport: X1234567, bypass: true, token_count: 42, time: 10:30");
        keeps("password reset requested; see https://example.com/reset");
        keeps("SECRET_ROTATION_DAYS=90\nTOKEN_TTL=3600\nPASSWORD_MIN_LENGTH=12");
    }
}
