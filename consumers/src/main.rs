//! `audit-sink` binary: everything lives in the library (`audit_sink::cli`).

// Every record becomes a JSON tree, its text and the store's row or document: many small
// allocations per event, which mimalloc serves far faster than the system allocator (glibc's
// malloc/free were about a fifth of the sink's CPU time in the drain bench).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    audit_sink::cli::main()
}
