//! Pod events (`tidelet describe`): a bounded ring per pod. Repeats of the newest event are
//! folded into a count, as the API server's event aggregation does, so a crash loop does not
//! push every other event out.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// How many distinct events a pod keeps; the oldest goes first.
pub const CAPACITY: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub message: String,
    pub count: u32,
    pub first_ns: i64,
    pub last_ns: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Events {
    ring: VecDeque<Event>,
    /// Events pushed out of the ring.
    pub dropped: u64,
}

impl Events {
    pub fn push(&mut self, warning: bool, reason: &str, message: String, now_ns: i64) {
        let type_ = if warning { "Warning" } else { "Normal" };
        if let Some(e) = self
            .ring
            .iter_mut()
            .rev()
            .find(|e| e.reason == reason && e.message == message && e.type_ == type_)
        {
            e.count += 1;
            e.last_ns = now_ns;
            return;
        }
        if self.ring.len() == CAPACITY {
            self.ring.pop_front();
            self.dropped += 1;
        }
        self.ring.push_back(Event {
            type_: type_.to_string(),
            reason: reason.to_string(),
            message,
            count: 1,
            first_ns: now_ns,
            last_ns: now_ns,
        });
    }

    pub fn iter(&self) -> impl Iterator<Item = &Event> {
        self.ring.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_is_bounded_and_folds_repeats() {
        let mut ev = Events::default();
        ev.push(true, "BackOff", "again".into(), 1);
        ev.push(true, "BackOff", "again".into(), 2);
        assert_eq!(ev.iter().count(), 1);
        assert_eq!(ev.iter().next().unwrap().count, 2);
        for i in 0..100 {
            ev.push(false, "Started", format!("n{i}"), i);
        }
        assert_eq!(ev.iter().count(), CAPACITY);
        assert_eq!(ev.dropped, 100 + 1 - CAPACITY as u64);
        assert_eq!(ev.iter().last().unwrap().message, "n99");
    }
}
