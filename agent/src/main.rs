//! The `tidelet` binary: a thin CLI over the library.

fn main() {
    eprintln!("tidelet: not yet");
    std::process::exit(2);
}
