//! The `tidelet` binary: a thin CLI over the library.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Hidden: the per-pod supervisor. Dispatched first, before any runtime or thread starts,
    // because it forks.
    if args.get(1).map(String::as_str) == Some("shim") {
        std::process::exit(tidelet::runtime::supervisor::main(&args[2..]));
    }
    eprintln!("tidelet: not yet");
    std::process::exit(2);
}
