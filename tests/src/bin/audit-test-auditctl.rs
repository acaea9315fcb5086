//! The `auditctl` binary for the process-level tests: the same entry point, built inside this
//! package so tests can find it.

fn main() -> std::process::ExitCode {
    auditctl::cli::main()
}
