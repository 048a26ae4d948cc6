//! What a panic in one of the agent's tasks means for the node: a node event (so that it is
//! seen in `tidelet describe node` and over MQTT, not only in the log) and, past the restart
//! limit, the agent's exit with [`EXIT_GAVE_UP`] so that systemd (`Restart=always`) starts it
//! afresh; the pods keep running under their own supervisors and are adopted again.

use std::sync::{Arc, Weak};

use crate::supervise::{self, Incident, Supervisor};

use super::Ctx;

/// The agent's exit status when a task kept panicking (EX_SOFTWARE, sysexits.h).
pub const EXIT_GAVE_UP: i32 = 70;

/// The supervisor of the agent's tasks. It holds the context weakly: the tasks it supervises
/// hold the supervisor, and must not keep the context alive on their own.
pub fn supervisor(ctx: &Arc<Ctx>) -> Supervisor {
    let weak: Weak<Ctx> = Arc::downgrade(ctx);
    supervise::Supervisor::new(
        supervise::policy::DEFAULT,
        Arc::new(move |i: &Incident| {
            if let Some(ctx) = weak.upgrade() {
                ctx.node_event(true, i.reason(), i.describe());
            }
        }),
        Arc::new(|i: &Incident| {
            tracing::error!(
                task = i.kind.name(),
                id = %i.id,
                status = EXIT_GAVE_UP,
                "the agent exits so that systemd restarts it; pods keep running"
            );
            std::process::exit(EXIT_GAVE_UP);
        }),
    )
}
