//! The `tidelet` binary: a thin CLI over the library (see `tidelet::cli`).

use clap::Parser;

fn main() {
    // Before any thread exists (see `tidelet::malloc`).
    tidelet::malloc::tune();
    let args: Vec<String> = std::env::args().collect();
    // Hidden: the per-pod supervisor, when `tidelet-shim` is not installed beside `tidelet`
    // (see `runtime::supervisor::shim_program`). Dispatched first, before any runtime or
    // thread starts, because it forks, and so that a supervisor never pays for the CLI's
    // parsing.
    if args.get(1).map(String::as_str) == Some("shim") {
        std::process::exit(tidelet::runtime::supervisor::main(&args[2..]));
    }
    let cli = tidelet::cli::Cli::parse();
    if matches!(cli.command, tidelet::cli::Command::Run(_)) {
        // The long-lived agent only; may execute this program again (still one thread).
        tidelet::malloc::without_thread_caches();
    }
    match tidelet::cli::main(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

/// C's `pow`, from the pure-Rust `libm` crate (musl's algorithm). tokio's multi-thread
/// scheduler calls it (its poll-time average) and nothing else in the agent does; without this
/// definition the link needs `libm.so.6` for that one function, and loading it (its code
/// mapped 64 KiB at a time, its IFUNC resolvers run) cost the agent 0.5 MiB of RSS (issue 16).
/// With it here the linker (`--as-needed`) drops libm from the agent's dependencies.
#[no_mangle]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}
