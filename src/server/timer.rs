//! A hashed timer wheel for transfer deadlines: O(1) to arm, no allocation once warm.
//!
//! Deadlines move on every ACK, so the wheel is lazy: a transfer sits in at most one bucket (the
//! owner records which, as a tick number). Moving a deadline later costs nothing; when its bucket
//! comes up, the owner looks at the real deadline and re-arms. Only a deadline moving earlier
//! than its bucket needs a second entry, and the stale one is skipped when its tick no longer
//! matches the owner's record.

use crate::proto::time::Timestamp;

/// Ticks per bucket ring. With 1 ms ticks, deadlines up to ~4 s land in their own bucket; later
/// ones wait in the farthest bucket and are re-armed from there.
const BUCKETS: usize = 4096;

/// A tick number meaning "in no bucket".
pub(crate) const NOT_ARMED: u64 = u64::MAX;

/// The wheel. Entries are slot indexes of the owner's table.
#[derive(Debug)]
pub(crate) struct TimerWheel {
    tick_us: u64,
    buckets: Vec<Vec<u32>>,
    /// One bit per non-empty bucket.
    occupied: [u64; BUCKETS / 64],
    /// Next tick to expire.
    cursor: u64,
}

impl TimerWheel {
    /// A wheel with ticks of `tick_us` microseconds starting at `now`.
    pub(crate) fn new(tick_us: u64, now: Timestamp) -> Self {
        let tick_us = tick_us.max(1);
        Self {
            tick_us,
            buckets: (0..BUCKETS).map(|_| Vec::new()).collect(),
            occupied: [0; BUCKETS / 64],
            cursor: now.as_micros() / tick_us,
        }
    }

    /// Arms `slot` for `deadline`. `armed` is the slot's record of the tick it sits in, updated
    /// here. Returns without work if the slot is already in a bucket no later than needed.
    pub(crate) fn arm(&mut self, slot: u32, armed: &mut u64, deadline: Timestamp) {
        // Round up, so that a timer never fires early.
        let want = deadline.as_micros().div_ceil(self.tick_us);
        let tick = want.clamp(self.cursor, self.cursor + BUCKETS as u64 - 1);
        if *armed != NOT_ARMED && *armed <= tick && *armed >= self.cursor {
            return;
        }
        let b = (tick % BUCKETS as u64) as usize;
        self.buckets[b].push(slot);
        self.occupied[b / 64] |= 1 << (b % 64);
        *armed = tick;
    }

    /// Collects `(slot, tick)` for every entry whose bucket is due at `now` into `due`. The owner
    /// must ignore an entry whose tick differs from its record (stale), clear its record for the
    /// others, and re-arm them from their real deadline.
    pub(crate) fn expire(&mut self, now: Timestamp, due: &mut Vec<(u32, u64)>) {
        let now_tick = now.as_micros() / self.tick_us;
        while self.cursor <= now_tick {
            // Skip empty buckets a word at a time.
            let b = (self.cursor % BUCKETS as u64) as usize;
            let word = self.occupied[b / 64] >> (b % 64);
            if word == 0 {
                let skip = (64 - b % 64) as u64;
                self.cursor += skip.min(now_tick + 1 - self.cursor);
                continue;
            }
            let zeros = u64::from(word.trailing_zeros());
            if zeros > 0 {
                self.cursor += zeros.min(now_tick + 1 - self.cursor);
                continue;
            }
            let tick = self.cursor;
            self.occupied[b / 64] &= !(1 << (b % 64));
            due.extend(self.buckets[b].drain(..).map(|s| (s, tick)));
            self.cursor += 1;
        }
    }

    /// The earliest time a bucket may be due (entries may turn out to be later), or `None`.
    pub(crate) fn next_due(&self) -> Option<Timestamp> {
        let start = (self.cursor % BUCKETS as u64) as usize;
        for i in 0..=self.occupied.len() {
            let w = (start / 64 + i) % self.occupied.len();
            let mut word = self.occupied[w];
            if i == 0 {
                word &= u64::MAX << (start % 64);
            } else if i == self.occupied.len() {
                word &= !(u64::MAX << (start % 64));
            }
            if word != 0 {
                let b = w * 64 + word.trailing_zeros() as usize;
                let ahead = (b + BUCKETS - start) % BUCKETS;
                return Some(Timestamp::from_micros((self.cursor + ahead as u64) * self.tick_us));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Timestamp {
        Timestamp::from_micros(v * 1000)
    }

    #[test]
    fn fires_on_time_never_early() {
        let mut w = TimerWheel::new(1000, ms(0));
        let mut rec = [NOT_ARMED; 3];
        w.arm(0, &mut rec[0], ms(5));
        w.arm(1, &mut rec[1], Timestamp::from_micros(5_500));
        w.arm(2, &mut rec[2], ms(100));
        assert_eq!(w.next_due(), Some(ms(5)));
        let mut due = Vec::new();
        w.expire(ms(4), &mut due);
        assert!(due.is_empty());
        w.expire(ms(5), &mut due);
        assert_eq!(due, [(0, 5)]);
        due.clear();
        w.expire(ms(6), &mut due);
        assert_eq!(due, [(1, 6)], "5.5 ms rounds up to the 6 ms tick");
        assert_eq!(w.next_due(), Some(ms(100)));
    }

    #[test]
    fn later_deadline_stays_put_earlier_one_rebuckets() {
        let mut w = TimerWheel::new(1000, ms(0));
        let mut rec = NOT_ARMED;
        w.arm(7, &mut rec, ms(10));
        w.arm(7, &mut rec, ms(50));
        assert_eq!(rec, 10, "lazy: still in the 10 ms bucket");
        w.arm(7, &mut rec, ms(3));
        assert_eq!(rec, 3);
        let mut due = Vec::new();
        w.expire(ms(20), &mut due);
        // The 10 ms entry is stale: its tick no longer matches the record.
        assert_eq!(due, [(7, 3), (7, 10)]);
    }

    #[test]
    fn far_deadlines_wait_in_the_last_bucket_and_wraps() {
        let mut w = TimerWheel::new(1000, ms(0));
        let mut rec = NOT_ARMED;
        w.arm(1, &mut rec, ms(10_000));
        assert_eq!(rec, BUCKETS as u64 - 1);
        let mut due = Vec::new();
        w.expire(ms(5_000), &mut due);
        assert_eq!(due, [(1, BUCKETS as u64 - 1)]);
        rec = NOT_ARMED;
        w.arm(1, &mut rec, ms(10_000));
        assert_eq!(rec, 5_000 + BUCKETS as u64);
        due.clear();
        w.expire(ms(9_999), &mut due);
        assert_eq!(due.len(), 1);
        rec = NOT_ARMED;
        w.arm(1, &mut rec, ms(10_000));
        due.clear();
        w.expire(ms(10_000), &mut due);
        assert_eq!(due, [(1, 10_000)]);
        assert_eq!(w.next_due(), None);
    }

    #[test]
    fn past_deadline_fires_at_next_expire() {
        let mut w = TimerWheel::new(1000, ms(100));
        let mut rec = NOT_ARMED;
        w.arm(3, &mut rec, ms(1));
        assert_eq!(w.next_due(), Some(ms(100)));
        let mut due = Vec::new();
        w.expire(ms(100), &mut due);
        assert_eq!(due, [(3, 100)]);
    }
}
