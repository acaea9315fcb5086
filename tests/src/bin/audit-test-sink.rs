//! The sink binary for the process-level tests: the same entry point as `audit-sink`, built inside
//! this package so tests can find it.

fn main() -> std::process::ExitCode {
    audit_sink::cli::main()
}
