//! Pod sources. Today the static-pod directory; later the MQTT desired-pod source sits beside
//! it, each producing a `DesiredSet` that the agent merges.

pub mod static_dir;

pub use static_dir::{DesiredPod, DesiredSet, StaticDir};
