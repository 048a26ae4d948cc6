//! `tidelet-gpu-plugin`: parse the command line, log to stderr, run the plugin on a
//! current-thread runtime until SIGTERM/SIGINT (exit 0) or a refused registration (exit 1).
//! A bad command line exits 2.

use std::process::ExitCode;

use tidelet_gpu_plugin::args::USAGE;
use tidelet_gpu_plugin::{Args, ArgsError};

fn main() -> ExitCode {
    tidelet_device_plugin::log::init();
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(ArgsError::Usage(tidelet_device_plugin::cli::UsageError::Help)) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("tidelet-gpu-plugin: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    tidelet_device_plugin::signals::serve_main(
        "tidelet-gpu-plugin",
        tidelet_gpu_plugin::run(args, tidelet_device_plugin::signals::terminated()),
    )
}
