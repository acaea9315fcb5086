//! `audit-sink` binary: everything lives in the library (`audit_sink::cli`).

fn main() -> std::process::ExitCode {
    audit_sink::cli::main()
}
