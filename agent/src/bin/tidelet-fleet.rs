//! `tidelet-fleet`: the control plane's view of a fleet over MQTT (nodes, pods, apply, delete,
//! watch), for the operator's machine. A binary of its own so that the agent boards run does
//! not carry it; `tidelet fleet ...` runs it when it is installed beside `tidelet`.

use clap::Parser;

fn main() {
    let args = tidelet::cli::FleetArgs::parse();
    match tidelet::cli::fleet(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
