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
    match tidelet::cli::main(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
