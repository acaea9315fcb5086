//! `auditctl` binary: everything is in the library ([`auditctl::cli`]).

// verify parses every stored event into a JSON tree: with glibc's allocator, malloc and free were
// over a third of its time (perf, `cargo bench -p auditctl --bench verify`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    auditctl::cli::main()
}
