//! Reconnect back-off for the MQTT session (rumqttc has none: polling its event loop again
//! after an error reconnects at once). Exponential with full jitter: the n-th consecutive
//! failure waits `uniform(0, min(cap, base * 2^n))`, never less than `base / 2` so a refusing
//! broker is not hammered; the count resets once a connection has stayed up for `stable`.
//! Pure: the random source is a parameter ([`XorShift`] in production, fixed in tests) and
//! time is passed in as monotonic durations.

use std::time::Duration;

/// A source of uniform random `u64`s.
pub trait Random {
    fn next_u64(&mut self) -> u64;
}

/// xorshift64*: tiny, good enough for jitter, seeded from the clock and the pid so that many
/// boards rebooting together do not reconnect in lock-step.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        // A zero state would stay zero forever.
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// Seeded from the wall clock's nanoseconds and the process id.
    pub fn from_entropy() -> XorShift {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let pid = u64::from(std::process::id());
        XorShift::new(t ^ pid.rotate_left(32) ^ 0xA076_1D64_78BD_642F)
    }
}

impl Random for XorShift {
    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The back-off's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub base: Duration,
    pub cap: Duration,
    /// A connection that stayed up this long resets the failure count.
    pub stable: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(60),
            stable: Duration::from_secs(30),
        }
    }
}

impl Policy {
    /// The ceiling of the `attempt`-th consecutive failure (0-based): `min(cap, base*2^n)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay for the `attempt`-th failure given a random `r`: uniform in
    /// `[base/2, ceiling]` (full jitter with a floor).
    pub fn delay(&self, attempt: u32, r: u64) -> Duration {
        let ceil = self.ceiling(attempt).as_millis() as u64;
        let floor = (self.base.as_millis() as u64 / 2).min(ceil);
        let span = ceil - floor;
        Duration::from_millis(floor + r % (span + 1))
    }
}

/// The state of the back-off across connection attempts.
#[derive(Debug)]
pub struct Backoff<R> {
    policy: Policy,
    rng: R,
    failures: u32,
    /// When the current connection came up (monotonic), if it is up.
    up_since: Option<Duration>,
}

impl<R: Random> Backoff<R> {
    pub fn new(policy: Policy, rng: R) -> Backoff<R> {
        Backoff {
            policy,
            rng,
            failures: 0,
            up_since: None,
        }
    }

    /// The connection came up at `now`.
    pub fn connected(&mut self, now: Duration) {
        self.up_since = Some(now);
    }

    /// A connection attempt failed or the connection dropped at `now`: how long to wait
    /// before the next attempt. A connection that had stayed up for `stable` starts over.
    pub fn failed(&mut self, now: Duration) -> Duration {
        if let Some(up) = self.up_since.take() {
            if now.saturating_sub(up) >= self.policy.stable {
                self.failures = 0;
            }
        }
        let d = self.policy.delay(self.failures, self.rng.next_u64());
        self.failures = self.failures.saturating_add(1);
        d
    }

    /// Consecutive failures since the last stable connection.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays fixed values.
    struct Fixed(Vec<u64>, usize);
    impl Random for Fixed {
        fn next_u64(&mut self) -> u64 {
            let v = self.0[self.1 % self.0.len()];
            self.1 += 1;
            v
        }
    }

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let p = Policy::default();
        let cases: &[(u32, u64)] = &[
            (0, 500),
            (1, 1000),
            (2, 2000),
            (6, 32_000),
            (7, 60_000),
            (20, 60_000),
            (40, 60_000),
            (u32::MAX, 60_000),
        ];
        for (n, want) in cases {
            assert_eq!(p.ceiling(*n), MS(*want), "attempt {n}");
        }
    }

    #[test]
    fn delays_are_jittered_between_the_floor_and_the_ceiling() {
        let p = Policy::default();
        // (attempt, random, delay): r % (span + 1) + floor(250).
        let cases: &[(u32, u64, u64)] = &[
            (0, 0, 250),
            (0, 250, 500),
            (0, 251, 250),
            (3, 0, 250),
            (3, 3750, 4000),
            (3, 1000, 1250),
            (10, u64::MAX, 250 + u64::MAX % 59_751),
            (10, 59_750, 60_000),
        ];
        for (n, r, want) in cases {
            assert_eq!(p.delay(*n, *r), MS(*want), "attempt {n}, r {r}");
        }
        let mut rng = XorShift::new(42);
        for n in 0..12 {
            for _ in 0..100 {
                let d = p.delay(n, rng.next_u64());
                assert!(d >= MS(250) && d <= p.ceiling(n), "{n}: {d:?}");
            }
        }
    }

    #[test]
    fn failures_grow_and_a_stable_connection_resets_them() {
        // Always the top of the range: the sequence shows the ceilings.
        let mut b = Backoff::new(Policy::default(), Fixed(vec![u64::MAX - 1], 0));
        let top = |b: &mut Backoff<Fixed>, now| b.failed(now);
        let mut seen = Vec::new();
        for i in 0..4 {
            seen.push(top(&mut b, MS(i)));
        }
        assert_eq!(b.failures(), 4);
        for d in &seen {
            assert!(*d <= MS(4000));
        }
        // Up for 10 s only: still counting.
        b.connected(MS(100_000));
        b.failed(MS(110_000));
        assert_eq!(b.failures(), 5);
        // Up for 30 s: back to the first step.
        b.connected(MS(200_000));
        let d = b.failed(MS(230_000));
        assert_eq!(b.failures(), 1);
        assert!(d <= MS(500), "{d:?}");
        // A failure without a connection in between keeps counting.
        b.failed(MS(231_000));
        assert_eq!(b.failures(), 2);
    }

    #[test]
    fn xorshift_never_sticks_at_zero_and_varies() {
        let mut r = XorShift::new(0);
        let a = r.next_u64();
        let b = r.next_u64();
        assert_ne!(a, 0);
        assert_ne!(a, b);
        let mut x = XorShift::from_entropy();
        let vals: std::collections::BTreeSet<u64> = (0..50).map(|_| x.next_u64()).collect();
        assert_eq!(vals.len(), 50);
    }
}
