//! Personal data: payment card numbers (an issuer's prefix and length and the Luhn check), US
//! SSNs (the validity rules) and IBANs (the country's length and the mod-97 check). Their gate is
//! a count of digits, not a literal.

use std::ops::Range;

use super::{Check as C, Family as F, Gate as G, Spec};

/// The personal-data detectors.
pub(super) const SPECS: &[Spec] = &[
    Spec {
        name: "card_number",
        family: F::CardNumbers,
        gate: G::Digits(13),
        regex: r"\b[2-6](?:[ -]?[0-9]){12,18}\b",
        check: C::Card,
    },
    Spec {
        name: "ssn",
        family: F::Ssn,
        gate: G::Digits(9),
        regex: r"\b(?:[0-9]{3}-[0-9]{2}-[0-9]{4}|[0-9]{3} [0-9]{2} [0-9]{4})\b",
        check: C::Ssn,
    },
    Spec {
        name: "ssn",
        family: F::Ssn,
        gate: G::Literals(&["ssn", "social security"]),
        regex: r"(?i:\bssn|social[ \t]+security(?:[ \t]+(?:number|no\.?))?)[\s:#=.-]{0,3}(?P<secret>[0-9]{9})\b",
        check: C::Ssn,
    },
    Spec {
        name: "iban",
        family: F::Iban,
        gate: G::Digits(8),
        regex: r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
        check: C::Iban,
    },
];

/// Luhn checksum over the digits of `s` (13–19 of them).
pub fn luhn_valid(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| match (i % 2, d * 2) {
            (1, twice) if twice > 9 => twice - 9,
            (1, twice) => twice,
            _ => d,
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Whether the digits of `s` could be a payment card: an issuer's prefix and length (Visa,
/// Mastercard, Amex, Diners, Discover, JCB, UnionPay, Maestro, Mir) and the Luhn check.
pub(in crate::redact) fn card_number(s: &str) -> bool {
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    let len = digits.len();
    let prefix = |n: usize| digits.get(..n).and_then(|p| p.parse::<u32>().ok()).unwrap_or(0);
    let issuer = match digits.as_bytes().first() {
        Some(b'2') => {
            ((2200..=2204).contains(&prefix(4)) && len >= 16) || ((2221..=2720).contains(&prefix(4)) && len == 16)
        }
        Some(b'3') => {
            ((prefix(2) == 34 || prefix(2) == 37) && len == 15)
                || (((300..=305).contains(&prefix(3)) || [36, 38, 39].contains(&prefix(2))) && len >= 14)
                || ((3528..=3589).contains(&prefix(4)) && len >= 16)
        }
        Some(b'4') => [13, 16, 19].contains(&len),
        Some(b'5') => ((51..=55).contains(&prefix(2)) && len == 16) || [50, 56, 57, 58].contains(&prefix(2)),
        Some(b'6') => len >= 16 || [63, 67].contains(&prefix(2)),
        _ => false,
    };
    (13..=19).contains(&len) && issuer && luhn_valid(&digits)
}

/// See [`super::Check::Ssn`].
pub(super) fn ssn(text: &str, range: Range<usize>) -> bool {
    let digits: String = text[range.clone()].chars().filter(char::is_ascii_digit).collect();
    if digits.len() != 9 {
        return false;
    }
    let (area, group, serial) = (&digits[..3], &digits[3..5], &digits[5..]);
    let area_ok = area != "000" && area != "666" && !area.starts_with('9');
    // Numbers printed in advertising and examples, never issued to a person.
    let published = ["078051120", "219099999", "123456789"].contains(&digits.as_str())
        || digits.bytes().all(|b| b == digits.as_bytes()[0]);
    // Part of a longer number (`1-123-45-6789`, `123-45-6789-0`, `123-45-6789.5`).
    let before = text[..range.start].chars().rev().take(2).collect::<Vec<_>>();
    let after = text[range.end..].chars().take(2).collect::<Vec<_>>();
    let joined = |near: &[char]| matches!(near, [sep, d, ..] if "-./".contains(*sep) && d.is_ascii_digit());
    area_ok && group != "00" && serial != "0000" && !published && !joined(&before) && !joined(&after)
}

/// IBAN length by country (the SWIFT IBAN registry).
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BI", 27),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DJ", 27),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FK", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("LY", 25),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MN", 20),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NI", 28),
    ("NL", 18),
    ("NO", 15),
    ("OM", 23),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("RU", 33),
    ("SA", 24),
    ("SC", 31),
    ("SD", 18),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("SO", 23),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
    ("YE", 30),
];

/// An IBAN (spaces allowed): its country's length and the ISO 7064 mod-97 check.
pub(super) fn iban_valid(s: &str) -> bool {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(&(_, len)) = IBAN_LENGTHS.iter().find(|(cc, _)| compact.starts_with(cc)) else { return false };
    if compact.len() != len || !compact.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()) {
        return false;
    }
    let rearranged = compact[4..].bytes().chain(compact[..4].bytes());
    let remainder = rearranged.fold(0u32, |acc, b| {
        let v = if b.is_ascii_digit() { u32::from(b - b'0') } else { u32::from(b - b'A') + 10 };
        if v >= 10 {
            (acc * 100 + v) % 97
        } else {
            (acc * 10 + v) % 97
        }
    });
    remainder == 1
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::test_support::{all_on, finds, keeps, scan};
    use super::*;
    use crate::redact::{RedactionPolicy, RedactionReport};

    #[test]
    fn luhn() {
        assert!(luhn_valid("4111111111111111"));
        assert!(luhn_valid("5555 5555 5555 4444"));
        assert!(!luhn_valid("4111111111111112"));
        assert!(!luhn_valid("1234"));
    }

    #[test]
    fn card_issuers_and_lengths() {
        for good in ["4111111111111111", "5555555555554444", "378282246310005", "6011111111111117", "3530111333300000"]
        {
            assert!(card_number(good), "{good}");
        }
        // Luhn-valid, but no issuer uses that prefix with that length.
        for bad in ["41111111111111", "7111111111111111", "5955555555554444", "37828224631000"] {
            let fixed = luhn_fix(bad);
            assert!(!card_number(&fixed), "{fixed}");
        }
        assert!(!card_number("4111111111111112"), "Luhn");
    }

    /// `digits` with its last digit changed so that the Luhn check passes.
    fn luhn_fix(digits: &str) -> String {
        (0..10)
            .map(|d| format!("{}{d}", &digits[..digits.len() - 1]))
            .find(|c| luhn_valid(c) || c.len() < 13)
            .unwrap_or_default()
    }

    #[test]
    fn ssn_validity_rules() {
        let check = |s: &str| ssn(s, 0..s.len());
        assert!(check("401-55-0001"));
        assert!(check("401 55 0001"));
        for bad in
            ["000-55-0001", "666-55-0001", "901-55-0001", "401-00-0001", "401-55-0000", "078-05-1120", "123-45-6789"]
        {
            assert!(!check(bad), "{bad}");
        }
        let text = "call 1-401-55-0001 now";
        let at = text.find("401").unwrap();
        assert!(!ssn(text, at..at + 11), "part of a longer number");
    }

    #[test]
    fn iban_check_digits_and_lengths() {
        let de = with_check_digits("DE", "370400440532013000");
        assert!(iban_valid(&de), "{de}");
        let spaced = de.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(" ");
        assert!(iban_valid(&spaced), "{spaced}");
        let mut wrong = de.clone().into_bytes();
        wrong[10] = if wrong[10] == b'9' { b'0' } else { wrong[10] + 1 };
        assert!(!iban_valid(std::str::from_utf8(&wrong).unwrap()), "one digit changed");
        assert!(!iban_valid(&with_check_digits("DE", "3704004405320130")), "too short for DE");
        assert!(!iban_valid(&with_check_digits("ZZ", "370400440532013000")), "no such country");
    }

    /// `cc` + the check digits that make `bban` a valid IBAN, computed the long way.
    fn with_check_digits(cc: &str, bban: &str) -> String {
        let numeric: String = format!("{bban}{cc}00")
            .chars()
            .map(|c| c.to_digit(36).map(|v| v.to_string()).unwrap_or_default())
            .collect();
        let remainder = numeric.chars().fold(0u64, |acc, c| (acc * 10 + u64::from(c.to_digit(10).unwrap())) % 97);
        format!("{cc}{:02}{bban}", 98 - remainder)
    }

    #[test]
    fn card_numbers_in_text_and_as_json_numbers() {
        finds("card_number", "card 4111 1111 1111 1111 on file", "4111 1111 1111 1111");
        finds("card_number", "amex 378282246310005.", "378282246310005");
        finds("card_number", "mc 5555-5555-5555-4444", "5555-5555-5555-4444");
        let policy = all_on();
        let mut v = json!({"n": 4111111111111111u64, "jcb": 3530111333300000u64, "amount": 1250.5,
            "order": 4111111111111112u64, "ts": 1732579200000u64, "nine": 9111111111111111u64, "small": 42});
        let mut report = RedactionReport::default();
        policy.redact("metadata", &mut v, &mut report);
        assert_eq!(v["n"], "***");
        assert_eq!(v["jcb"], "***");
        assert_eq!(report.by_rule.get("card_number"), Some(&2));
        let mut paths = report.paths.clone();
        paths.sort(); // document order follows the map's order, which a build may change
        assert_eq!(paths, vec!["metadata.jcb", "metadata.n"]);
        assert_eq!(v["order"], 4111111111111112u64, "Luhn fails");
        assert_eq!(v["ts"], 1732579200000u64, "a millisecond timestamp");
        assert_eq!(v["nine"], 9111111111111111u64, "no issuer starts with 9");
        keeps("order 4111 1111 1111 1112, ts 1732579200000, ISBN 978-3-16-148410-0, +1 555 123 4567");
        keeps("tracking 1Z999AA10123456784 and 2024-01-15 10:30:00.123456");
    }

    #[test]
    fn ssns_with_the_validity_rules() {
        finds("ssn", "SSN 401-55-0001 on file", "401-55-0001");
        finds("ssn", "social security number 401 55 0001", "401 55 0001");
        finds("ssn", "ssn: 401550001", "401550001");
        for bad in ["000-55-0001", "666-55-0001", "901-55-0001", "401-00-0001", "401-55-0000", "078-05-1120"] {
            keeps(&format!("id {bad}"));
        }
        keeps("a bare 401550001 with no context, call 555-123-4567, on 2024-01-15, 1-401-55-0001");
    }

    #[test]
    fn ibans_with_the_mod_97_check() {
        for iban in [
            with_check_digits("DE", "100100100000123456"),
            with_check_digits("GB", "XMPL00000012345678"),
            with_check_digits("NL", "XMPL0123456789"),
        ] {
            finds("iban", &format!("refund to {iban} today"), &iban);
            let spaced =
                iban.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(" ");
            finds("iban", &format!("refund to {spaced}"), &spaced);
        }
        let good = with_check_digits("DE", "100100100000123456");
        let bad_check = format!("{}{}", &good[..2], if &good[2..4] == "11" { "12" } else { "11" }) + &good[4..];
        keeps(&format!("refund to {bad_check}"));
        keeps(&format!("refund to {}", with_check_digits("US", "123456789012345678")));
        keeps(&format!("refund to {}", with_check_digits("DE", "1001001000001234567")));
        keeps(&format!("refund to {}", with_check_digits("DE", "100100100000123456").to_lowercase()));
        let (out, _) = scan(&RedactionPolicy::default_policy(), &format!("refund to {good}"));
        assert_eq!(out, format!("refund to {good}"), "off by default");
    }
}
