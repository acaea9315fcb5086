//! `auditctl` binary: everything is in the library ([`auditctl::cli`]).

fn main() -> std::process::ExitCode {
    auditctl::cli::main()
}
