//! `audit-processor` binary: everything lives in the library (`audit_processor::cli`).

// The pipeline allocates many small JSON nodes per event; mimalloc serves them far faster than
// the system allocator (see the pipeline bench).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    audit_processor::cli::main()
}
