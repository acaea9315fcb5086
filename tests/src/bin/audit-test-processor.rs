//! The processor binary for the process-level tests (kill -9, rebalances): the same entry point as
//! `audit-processor`, built inside this package so tests can find it.

fn main() -> std::process::ExitCode {
    audit_processor::cli::main()
}
