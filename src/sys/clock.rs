//! The monotonic clock fed to the protocol state machines: microseconds since a start instant.

use std::time::{Duration, Instant};

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

#[cfg(test)]
mod tests {
    use super::*;

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
