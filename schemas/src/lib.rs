//! The auditstream event contract, shared by every part of the pipeline.
//!
//! * [`AuditEventInput`] is what applications publish to the raw topic
//!   (`schemas/audit-event.input.schema.json`, `schemas/audit-event.input.avsc`).
//! * [`AuditEvent`] is what the processor publishes and every sink stores
//!   (`schemas/audit-event.schema.json`, `schemas/audit-event.avsc`).
//!
//! # Layout
//! * [`model`]: the Rust types, field for field the JSON Schemas (a drift test keeps them equal).
//! * [`contract`]: reading a JSON value as a contract type, strict or lenient about unknown fields
//!   (`contract/reading.rs`), with errors that name the field ([`ContractError`]).
//! * [`codec`]: wire detection, decoding JSON or Avro bytes (through [`contract`]) and encoding.
//! * [`avro`]: Avro single-object encoding; the writer schema's CRC-64-AVRO fingerprint travels in each
//!   record, so no registry server is needed (`avro/encode.rs`, `avro/decode.rs`).
//! * [`canonical`]: RFC 8785 canonical JSON.
//! * [`chain`]: the hash chain: `hash = SHA-256(canonical(event without integrity.hash))`, the genesis
//!   rule, hashing stored canonical text (`chain/text_hash.rs`), and [`chain::verify_chain`]
//!   (`chain/verify.rs`), which names the first break and its kind.
//!
//! Everything here is pure: no I/O, no clock except [`Timestamp::now`].
//!
//! ```
//! use audit_schema::{codec, Actor, AuditEventInput, Outcome, ValidationOptions};
//!
//! let input = AuditEventInput::new("user.login", Outcome::Success, Actor::new("user", "u-42"));
//! let bytes = codec::encode_input(&input, codec::WireFormat::Json).unwrap();
//! let decoded = codec::decode_input(&bytes, ValidationOptions::STRICT).unwrap();
//! assert_eq!(decoded.event, input);
//! ```

pub mod avro;
pub mod canonical;
pub mod chain;
pub mod checkpoint;
pub mod codec;
pub mod contract;
pub mod model;
mod timestamp;
pub mod validate;
pub mod wire;

pub use codec::{ContractError, Decoded, WireFormat};
pub use model::*;
pub use timestamp::{Timestamp, TimestampParseError};
pub use validate::{FieldError, ValidationOptions};
