//! `tidelet-generic-plugin`: parse the command line and the config (exit 2 when either is
//! bad), log to stderr, run on a current-thread runtime until SIGTERM/SIGINT (exit 0) or a
//! refused registration (exit 1).

use std::process::ExitCode;

use tidelet_generic_plugin::args::USAGE;
use tidelet_generic_plugin::{Args, ArgsError};

fn main() -> ExitCode {
    tidelet_device_plugin::log::init();
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(ArgsError::Usage(tidelet_device_plugin::cli::UsageError::Help)) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("tidelet-generic-plugin: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = match tidelet_generic_plugin::config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tidelet-generic-plugin: bad config: {e}");
            return ExitCode::from(2);
        }
    };
    tidelet_device_plugin::signals::serve_main(
        "tidelet-generic-plugin",
        tidelet_generic_plugin::run(&args, &config, tidelet_device_plugin::signals::terminated()),
    )
}
