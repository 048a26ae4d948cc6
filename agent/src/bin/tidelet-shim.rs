//! `tidelet-shim --pod-dir DIR [--ready-fd N]`: the per-pod supervisor on its own, which the
//! agent runs when it is installed beside `tidelet` (`tidelet shim` does the same with the
//! whole agent's code mapped; see `runtime::supervisor::shim_program` for what that costs
//! every pod). Linked from the same library, so the two cannot disagree.

fn main() {
    tidelet::malloc::tune();
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(tidelet::runtime::supervisor::main(&args));
}
