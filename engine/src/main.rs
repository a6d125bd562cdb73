//! The `engine` binary: everything is a library call (see `engine::cli`).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    engine::cli::main()
}
