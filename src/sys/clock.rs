//! The monotonic clock fed to the protocol state machines: microseconds since a start instant;
//! and the arrival times the kernel stamps on received datagrams, brought onto it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::proto::Timestamp;

/// A monotonic clock counting from the moment it was made.
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    /// A clock whose zero is now.
    pub fn new() -> Self {
        Self(Instant::now())
    }

    /// The time since the clock's zero, as the state machines take it (saturating: a clock
    /// would have to run for 584,000 years to reach the end).
    pub fn now(&self) -> Timestamp {
        Timestamp::from_micros(u64::try_from(self.0.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    /// The time since the clock's zero.
    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Brings the kernel's arrival times of datagrams (`SO_TIMESTAMPNS`: the real-time clock) onto
/// a monotonic [`Clock`]: both clocks are read one after the other at the first arrival of each
/// loop turn (per `now`), and an arrival is as long before the monotonic reading as it is
/// before the real-time one. A step of the real-time clock between an arrival and the reading
/// moves that arrival with it (forward: it looks older); one in the future reads as the
/// monotonic reading.
#[derive(Clone, Copy, Debug)]
pub struct Arrivals {
    clock: Clock,
    /// The `now` of the last reading, and both clocks then.
    read_at: Option<(Timestamp, Timestamp, Duration)>,
}

impl Arrivals {
    /// Arrival times on `clock`.
    pub fn new(clock: Clock) -> Self {
        Self { clock, read_at: None }
    }

    /// When a datagram the kernel stamped `stamp` (since the epoch) arrived, on the clock, in
    /// the loop turn of `now`.
    pub fn arrived(&mut self, now: Timestamp, stamp: Duration) -> Timestamp {
        let (mono, wall) = match self.read_at {
            Some((at, mono, wall)) if at == now => (mono, wall),
            _ => {
                // The real-time clock first: a pause between the two readings makes arrivals
                // look later, never earlier (a request is then never taken for an older copy).
                let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                let mono = self.clock.now();
                self.read_at = Some((now, mono, wall));
                (mono, wall)
            }
        };
        let age = u64::try_from(wall.saturating_sub(stamp).as_micros()).unwrap_or(u64::MAX);
        Timestamp::from_micros(mono.as_micros().saturating_sub(age))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_arrival_is_as_far_before_the_clock_as_before_the_wall_clock() {
        let clock = Clock::new();
        std::thread::sleep(Duration::from_millis(500));
        let mut a = Arrivals::new(clock);
        let now = clock.now();
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let got = a.arrived(now, wall - Duration::from_millis(300));
        let age = clock.now().saturating_since(got);
        assert!(age >= Duration::from_millis(300) && age < Duration::from_millis(400), "{age:?}");
        assert!(a.arrived(now, wall + Duration::from_secs(5)) >= now, "one in the future reads as the reading");
        let later = Timestamp::from_micros(now.as_micros() + 1);
        assert_eq!(a.arrived(later, Duration::ZERO), Timestamp::ZERO, "never before the clock's zero");
    }

    #[test]
    fn time_moves_forward_from_zero() {
        let c = Clock::new();
        let a = c.now();
        std::thread::sleep(Duration::from_millis(2));
        let b = c.now();
        assert!(b.saturating_since(a) >= Duration::from_millis(2));
        assert!(c.elapsed() >= Duration::from_millis(2));
    }
}
