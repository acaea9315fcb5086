//! Signed checkpoints: an Ed25519 signature over `(chain, seq, hash, time)` of a chain's head.
//!
//! A hash chain alone cannot show that its newest events were deleted, or that the whole chain was
//! rewritten from some seq on with fresh hashes. A checkpoint held where the store's writers cannot
//! change it (a witness file, another system) can: the chain must still reach the checkpoint's seq
//! with the checkpoint's hash there, and a forged checkpoint fails its signature.
//!
//! A checkpoint is one JSON object; the signature covers the RFC 8785 canonical form of the object
//! without its `signature` field:
//!
//! ```json
//! {"kind":"audit.checkpoint","version":1,"chain":"audit.raw/3","seq":1000,"hash":"…64 hex…",
//!  "time":"2026-11-26T10:00:00.000Z","keyId":"…16 hex…","signature":"…base64…"}
//! ```
//!
//! Version 2 (what the processor signs now) adds two signed fields, both left out when empty so
//! that a version 1 object and its signature stay exactly as they were:
//!
//! * `prev`: the [`Checkpoint::digest`] of the previous checkpoint of the same chain, as the lane
//!   that signed this one knew it (its own previous checkpoint, or the newest one its processed
//!   partition held when it took the chain over). Witness entries of one chain thus link to each
//!   other: removing or reordering entries in the middle of a witness breaks a link.
//! * `final`: `true` on the checkpoint a lane signs when it is released (clean shutdown, revoke):
//!   the head it names was the chain's end then, so an event after it that no later checkpoint
//!   covers was not written by that processor.
//!
//! Version 1 checkpoints still verify (they carry neither field).
//!
//! Keys are files of hex text: the 32-byte secret seed (`checkpoint.key`) and the 32-byte public
//! key (`checkpoint.pub`); `keyId` is the first 16 hex digits of SHA-256 over the public key, so a
//! verifier holding several public keys (after a rotation) knows which one to use.

use std::path::Path;

use ed25519_dalek::{Signer as _, Verifier as _};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::canonical;

/// The `kind` of every checkpoint.
pub const KIND: &str = "audit.checkpoint";

/// The format version [`SigningKey::sign`] writes.
pub const VERSION: u32 = 2;

/// What a checkpoint says beyond its head: its predecessor and whether it is a lane's last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointLinks {
    /// The [`Checkpoint::digest`] of the chain's previous checkpoint, when known.
    pub prev: Option<String>,
    /// The lane was released here (clean shutdown, revoke).
    pub is_final: bool,
}

/// The Kafka header naming what a processed-topic record holds. Events carry none (or `event`);
/// a checkpoint record, published in its chain's partition after the event it covers, carries
/// [`RECORD_CHECKPOINT`] and the checkpoint JSON as its payload.
pub use crate::wire::headers::RECORD as RECORD_HEADER;
pub use crate::wire::RECORD_CHECKPOINT;

/// One signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Checkpoint {
    /// Always [`KIND`].
    pub kind: String,
    /// Format version: 2 ([`VERSION`]); 1 before `prev` and `final` (still verified).
    pub version: u32,
    /// The chain (`<raw topic>/<partition>`).
    pub chain: String,
    /// The seq of the newest event covered.
    pub seq: u64,
    /// That event's `integrity.hash`.
    pub hash: String,
    /// When it was signed (RFC 3339, UTC, milliseconds).
    pub time: String,
    /// (Version 2) The [`Checkpoint::digest`] of the chain's previous checkpoint; absent on the
    /// first one a lane signs without knowing its predecessor (a new chain, or one taken over
    /// after a crash whose newest checkpoint was not in the tail the lane read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    /// (Version 2) Signed when the lane was released (clean shutdown, revoke): the chain ended
    /// here then.
    #[serde(default, rename = "final", skip_serializing_if = "std::ops::Not::not")]
    pub is_final: bool,
    /// Which key signed it.
    pub key_id: String,
    /// Base64 (standard, padded) Ed25519 signature.
    pub signature: String,
}

impl Checkpoint {
    /// A stable identity for stores: `<chain>:<seq>:<signature>` (the same checkpoint delivered
    /// twice has the same id; Ed25519 signatures are deterministic).
    pub fn id(&self) -> String {
        format!("{}:{}:{}", self.chain, self.seq, self.signature)
    }

    /// Reads a checkpoint record's payload (the JSON object above, nothing else).
    pub fn from_json(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
        let c: Checkpoint = serde_json::from_slice(bytes).map_err(|e| CheckpointError::Malformed(e.to_string()))?;
        c.checked()
    }

    /// [`Checkpoint::from_json`] of an already parsed value.
    pub fn from_value(value: serde_json::Value) -> Result<Checkpoint, CheckpointError> {
        let c: Checkpoint = serde_json::from_value(value).map_err(|e| CheckpointError::Malformed(e.to_string()))?;
        c.checked()
    }

    /// Lowercase hex SHA-256 of the checkpoint's RFC 8785 form, signature included: what the next
    /// checkpoint of the chain names as its `prev`.
    pub fn digest(&self) -> String {
        let value = serde_json::to_value(self).unwrap_or_default();
        hex::encode(sha2::Sha256::digest(canonical::canonicalize(&value).unwrap_or_default()))
    }

    fn checked(self) -> Result<Checkpoint, CheckpointError> {
        if self.kind != KIND {
            return Err(CheckpointError::Malformed(format!("kind is {:?}, not {KIND:?}", self.kind)));
        }
        Ok(self)
    }
}

/// Why a checkpoint or key is not usable.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A key file could not be read or is not 64 hex digits.
    #[error("{path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The signature does not verify, or the key id is unknown.
    #[error("checkpoint of {chain} at seq {seq}: {reason}")]
    Invalid {
        /// The chain it claims.
        chain: String,
        /// The seq it claims.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// Not a checkpoint object.
    #[error("not a checkpoint: {0}")]
    Malformed(String),
}

fn key_id_of(public: &ed25519_dalek::VerifyingKey) -> String {
    hex::encode(&sha2::Sha256::digest(public.to_bytes())[..8])
}

fn read_hex32(path: &Path) -> Result<[u8; 32], CheckpointError> {
    let bad = |reason: String| CheckpointError::Key { path: path.display().to_string(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let bytes = hex::decode(text.trim()).map_err(|e| bad(format!("not hex: {e}")))?;
    bytes.try_into().map_err(|b: Vec<u8>| bad(format!("{} bytes, expected 32 (64 hex digits)", b.len())))
}

/// The bytes a signature covers: the canonical JSON of the checkpoint without `signature`.
fn signed_bytes(c: &Checkpoint) -> Vec<u8> {
    let mut value = serde_json::to_value(c).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.remove("signature");
    }
    canonical::canonicalize(&value).unwrap_or_default()
}

/// A private signing key.
#[derive(Clone)]
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
    id: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("key_id", &self.id).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A key from its 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> SigningKey {
        let key = ed25519_dalek::SigningKey::from_bytes(seed);
        let id = key_id_of(&key.verifying_key());
        SigningKey { key, id }
    }

    /// A new key from the operating system's random source.
    pub fn generate() -> Result<SigningKey, CheckpointError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| CheckpointError::Key { path: "(random source)".into(), reason: e.to_string() })?;
        Ok(SigningKey::from_seed(&seed))
    }

    /// Reads a key file (64 hex digits).
    pub fn from_file(path: &Path) -> Result<SigningKey, CheckpointError> {
        Ok(SigningKey::from_seed(&read_hex32(path)?))
    }

    /// Reads a key from hex text (e.g. an environment variable's value).
    pub fn from_hex(text: &str, origin: &str) -> Result<SigningKey, CheckpointError> {
        let bad = |reason: String| CheckpointError::Key { path: origin.to_owned(), reason };
        let bytes = hex::decode(text.trim()).map_err(|e| bad(format!("not hex: {e}")))?;
        let seed: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| bad(format!("{} bytes, expected 32", b.len())))?;
        Ok(SigningKey::from_seed(&seed))
    }

    /// The seed as hex (what a key file holds).
    pub fn to_hex(&self) -> String {
        hex::encode(self.key.to_bytes())
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey { key: self.key.verifying_key(), id: self.id.clone() }
    }

    /// This key's id.
    pub fn key_id(&self) -> &str {
        &self.id
    }

    /// Signs the head `(chain, seq, hash)` at `time` (RFC 3339), version 2 with no predecessor
    /// and not final.
    pub fn sign(&self, chain: &str, seq: u64, hash: &str, time: &str) -> Checkpoint {
        self.sign_linked(chain, seq, hash, time, CheckpointLinks::default())
    }

    /// Signs the head `(chain, seq, hash)` at `time` (RFC 3339) with its `links`.
    pub fn sign_linked(&self, chain: &str, seq: u64, hash: &str, time: &str, links: CheckpointLinks) -> Checkpoint {
        self.sign_checkpoint(Checkpoint {
            kind: KIND.into(),
            version: VERSION,
            chain: chain.into(),
            seq,
            hash: hash.into(),
            time: time.into(),
            prev: links.prev,
            is_final: links.is_final,
            key_id: self.id.clone(),
            signature: String::new(),
        })
    }

    fn sign_checkpoint(&self, mut c: Checkpoint) -> Checkpoint {
        let signature = self.key.sign(&signed_bytes(&c));
        c.signature = base64_encode(&signature.to_bytes());
        c
    }
}

/// A public key that verifies checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: ed25519_dalek::VerifyingKey,
    id: String,
}

impl PublicKey {
    /// Reads a public key file (64 hex digits).
    pub fn from_file(path: &Path) -> Result<PublicKey, CheckpointError> {
        let bytes = read_hex32(path)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|e| CheckpointError::Key {
            path: path.display().to_string(),
            reason: format!("not an Ed25519 public key: {e}"),
        })?;
        let id = key_id_of(&key);
        Ok(PublicKey { key, id })
    }

    /// The key as hex (what a public key file holds).
    pub fn to_hex(&self) -> String {
        hex::encode(self.key.to_bytes())
    }

    /// This key's id.
    pub fn key_id(&self) -> &str {
        &self.id
    }

    /// The key's fingerprint: lowercase hex SHA-256 over its 32 bytes (a keyring pins keys by it;
    /// [`PublicKey::key_id`] is its first 16 digits).
    pub fn fingerprint(&self) -> String {
        hex::encode(sha2::Sha256::digest(self.key.to_bytes()))
    }

    /// Checks the checkpoint's kind, key id and signature.
    pub fn verify(&self, c: &Checkpoint) -> Result<(), CheckpointError> {
        let invalid = |reason: String| CheckpointError::Invalid { chain: c.chain.clone(), seq: c.seq, reason };
        let v1_with_v2_fields = c.version == 1 && (c.prev.is_some() || c.is_final);
        if c.kind != KIND || !(1..=VERSION).contains(&c.version) || v1_with_v2_fields {
            return Err(invalid(format!(
                "kind {:?} version {} is not a checkpoint this verifier knows",
                c.kind, c.version
            )));
        }
        if c.key_id != self.id {
            return Err(invalid(format!("signed by key {}, not by the given public key {}", c.key_id, self.id)));
        }
        let bytes = base64_decode(&c.signature).ok_or_else(|| invalid("the signature is not base64".into()))?;
        let bytes: [u8; 64] = bytes.try_into().map_err(|_| invalid("the signature is not 64 bytes".into()))?;
        let signature = ed25519_dalek::Signature::from_bytes(&bytes);
        self.key
            .verify(&signed_bytes(c), &signature)
            .map_err(|_| invalid("the signature does not verify: forged or altered".into()))
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_checkpoint_verifies_and_any_change_breaks_it() {
        let key = SigningKey::from_seed(&[7u8; 32]);
        let public = key.public();
        let c = key.sign("audit.raw/3", 1000, &"ab".repeat(32), "2026-11-26T10:00:00.000Z");
        assert_eq!(c.key_id.len(), 16);
        public.verify(&c).unwrap();
        let line = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Checkpoint>(&line).unwrap(), c);

        for forged in [
            Checkpoint { seq: 999, ..c.clone() },
            Checkpoint { hash: "cd".repeat(32), ..c.clone() },
            Checkpoint { chain: "audit.raw/4".into(), ..c.clone() },
            Checkpoint { time: "2026-11-27T10:00:00.000Z".into(), ..c.clone() },
        ] {
            let error = public.verify(&forged).unwrap_err().to_string();
            assert!(error.contains("does not verify"), "{error}");
        }
        let other = SigningKey::from_seed(&[8u8; 32]);
        let error = public.verify(&other.sign("audit.raw/3", 1000, &"ab".repeat(32), &c.time)).unwrap_err();
        assert!(error.to_string().contains("not by the given public key"), "{error}");
    }

    #[test]
    fn version_1_checkpoints_still_verify_and_cannot_gain_version_2_fields() {
        let key = SigningKey::from_seed(&[7u8; 32]);
        let public = key.public();
        // A version 1 checkpoint as the processor signed it before `prev` and `final`.
        let v1 = key.sign_checkpoint(Checkpoint {
            kind: KIND.into(),
            version: 1,
            chain: "audit.raw/3".into(),
            seq: 10,
            hash: "ab".repeat(32),
            time: "2026-11-26T10:00:00.000Z".into(),
            prev: None,
            is_final: false,
            key_id: key.key_id().into(),
            signature: String::new(),
        });
        let line = serde_json::to_string(&v1).unwrap();
        assert!(!line.contains("prev") && !line.contains("final"), "{line}");
        public.verify(&Checkpoint::from_json(line.as_bytes()).unwrap()).unwrap();
        // The old signed form: exactly the seven fields, no new key.
        let old = format!(
            r#"{{"chain":"audit.raw/3","hash":"{}","keyId":"{}","kind":"audit.checkpoint","seq":10,"time":"2026-11-26T10:00:00.000Z","version":1}}"#,
            "ab".repeat(32),
            key.key_id()
        );
        assert_eq!(signed_bytes(&v1), old.as_bytes());
        for forged in [
            Checkpoint { is_final: true, ..v1.clone() },
            Checkpoint { prev: Some("00".repeat(32)), ..v1.clone() },
            Checkpoint { version: 2, ..v1.clone() },
            Checkpoint { version: 3, ..v1.clone() },
        ] {
            assert!(public.verify(&forged).is_err(), "{forged:?}");
        }
    }

    #[test]
    fn version_2_signs_its_predecessor_and_the_final_mark() {
        let key = SigningKey::from_seed(&[7u8; 32]);
        let public = key.public();
        let first = key.sign("audit.raw/3", 10, &"ab".repeat(32), "2026-11-26T10:00:00.000Z");
        assert_eq!((first.version, first.prev.as_deref(), first.is_final), (2, None, false));
        let links = CheckpointLinks { prev: Some(first.digest()), is_final: true };
        let last = key.sign_linked("audit.raw/3", 20, &"cd".repeat(32), "2026-11-26T10:00:01.000Z", links);
        public.verify(&last).unwrap();
        let line = serde_json::to_string(&last).unwrap();
        assert!(
            line.contains(&format!(r#""prev":"{}""#, first.digest())) && line.contains(r#""final":true"#),
            "{line}"
        );
        assert_eq!(Checkpoint::from_json(line.as_bytes()).unwrap(), last);
        assert_eq!(first.digest().len(), 64);
        assert_ne!(first.digest(), last.digest());
        // Dropping the final mark, or naming another predecessor, breaks the signature.
        for forged in [
            Checkpoint { is_final: false, ..last.clone() },
            Checkpoint { prev: None, ..last.clone() },
            Checkpoint { prev: Some("00".repeat(32)), ..last.clone() },
        ] {
            let error = public.verify(&forged).unwrap_err().to_string();
            assert!(error.contains("does not verify"), "{error}");
        }
    }

    #[test]
    fn keys_round_trip_through_their_hex_files() {
        let dir = std::env::temp_dir().join(format!("checkpoint-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = SigningKey::generate().unwrap();
        std::fs::write(dir.join("k"), key.to_hex()).unwrap();
        std::fs::write(dir.join("p"), format!("{}\n", key.public().to_hex())).unwrap();
        let again = SigningKey::from_file(&dir.join("k")).unwrap();
        let public = PublicKey::from_file(&dir.join("p")).unwrap();
        assert_eq!(again.key_id(), key.key_id());
        public.verify(&again.sign("c/0", 1, "h", "t")).unwrap();
        std::fs::write(dir.join("bad"), "abcd").unwrap();
        let error = PublicKey::from_file(&dir.join("bad")).unwrap_err().to_string();
        assert!(error.contains("2 bytes, expected 32"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
