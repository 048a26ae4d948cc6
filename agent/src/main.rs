//! The `tidelet` binary: a thin CLI over the library (see `tidelet::cli`).

use clap::Parser;

fn main() {
    let cli = tidelet::cli::Cli::parse();
    match tidelet::cli::main(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
