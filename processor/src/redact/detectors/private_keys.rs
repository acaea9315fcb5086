//! Private keys: PEM blocks (`-----BEGIN … PRIVATE KEY-----`, PGP key blocks) and PuTTY key files,
//! masked whole; first in the table, as a key block may contain anything.

use super::{Check as C, Family as F, Gate as G, Spec};

/// The private-key detectors.
pub(super) const SPECS: &[Spec] = &[
    Spec {
        name: "private_key",
        family: F::PrivateKeys,
        gate: G::Literals(&["-----BEGIN"]),
        regex: r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?s:.*?)(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\z)",
        check: C::Format,
    },
    Spec {
        name: "private_key",
        family: F::PrivateKeys,
        gate: G::Literals(&["PuTTY-User-Key-File-"]),
        regex: r"PuTTY-User-Key-File-\d+:(?s:.*?)(?:Private-MAC: *[0-9a-fA-F]+|\z)",
        check: C::Format,
    },
];

#[cfg(test)]
mod tests {
    use super::super::test_support::{finds, keeps};

    #[test]
    fn private_key_blocks() {
        finds(
            "private_key",
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAAEXAMPLE\n-----END OPENSSH PRIVATE KEY-----",
            "b3BlbnNzaC1rZXktdjEAAAAAEXAMPLE",
        );
        finds(
            "private_key",
            "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBEXAMPLE\n-----END PGP PRIVATE KEY BLOCK-----",
            "lQOYBEXAMPLE",
        );
        finds("private_key", "cut off: -----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIEXAMPLE", "MIIEXAMPLE");
        finds(
            "private_key",
            "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nPrivate-Lines: 1\nAAAAEXAMPLE\nPrivate-MAC: 0123abcd",
            "AAAAEXAMPLE",
        );
        keeps("-----BEGIN PUBLIC KEY-----\nMIIBIjEXAMPLE\n-----END PUBLIC KEY-----");
        keeps("-----BEGIN CERTIFICATE-----\nMIIDEXAMPLE\n-----END CERTIFICATE-----");
    }
}
