//! Pod sources: the static-pod directory and the desired pods from the control plane
//! (`remote`, checked against the local `policy`), each producing a `DesiredSet` that `merge`
//! combines (the local file wins a name clash).

pub mod merge;
pub mod policy;
pub mod remote;
pub mod static_dir;

pub use merge::{conflict_result, merge, Conflict};
pub use policy::RemotePolicy;
pub use remote::{DesiredResult, RemoteSource, ResultReason, MAX_REMOTE_MANIFEST_BYTES};
pub use static_dir::{DesiredPod, DesiredSet, StaticDir};
