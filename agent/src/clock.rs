//! The agent's one wall clock. Decisions take times as arguments (pure, table-tested); the
//! loops that call them read the clock here, so that no lower module borrows another's.

/// Nanoseconds since the Unix epoch (0 if the clock is before it), the unit of every
/// timestamp tidelet records and publishes.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
