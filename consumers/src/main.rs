//! `audit-sink` binary (skeleton until the sink issue lands).

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "audit-sink: the sink runtime is not implemented yet (planned sinks: {}).",
        audit_sink::SINK_KINDS.join(", ")
    );
    ExitCode::from(2)
}
