//! A hashed timer wheel for per-transfer deadlines (server transfers, load-generator clients): O(1) to arm and to cancel, and no allocation at
//! all, because each bucket is an intrusive doubly-linked list threaded through the owner's
//! slots ([`TimerLink`], 12 bytes per slot).
//!
//! Deadlines move on every ACK, so arming is lazy: moving a deadline later leaves the slot in its
//! earlier bucket, and when that bucket comes up the owner looks at the real deadline and arms
//! again. Only a deadline that moves earlier than its bucket moves the slot.

use crate::proto::time::Timestamp;

/// Buckets in the ring. With 1 ms ticks, deadlines up to ~4 s land in their own bucket; later
/// ones wait in the farthest bucket and are armed again from there.
const BUCKETS: usize = 4096;
const NIL: u32 = u32::MAX;
/// [`TimerLink::tick`]'s bit for "in a bucket"; the other 31 bits are the tick's low bits.
const ARMED: u32 = 1 << 31;
const TICK_BITS: u32 = ARMED - 1;

/// A slot's place in the wheel.
#[derive(Clone, Copy, Debug)]
pub struct TimerLink {
    prev: u32,
    next: u32,
    /// [`ARMED`] and the low 31 bits of the tick of the bucket the slot is in; 0 when in none.
    /// A slot in the wheel is never due before the cursor nor a ring's length after it, so the
    /// low bits name its tick exactly, however long the wheel runs (see [`TimerWheel::armed`]).
    tick: u32,
}

impl Default for TimerLink {
    fn default() -> Self {
        Self { prev: NIL, next: NIL, tick: 0 }
    }
}

impl TimerLink {
    /// Whether the slot is in a bucket.
    fn is_in(&self) -> bool {
        self.tick & ARMED != 0
    }

    /// Whether the slot is in a bucket.
    #[cfg(test)]
    pub(crate) fn is_armed(&self) -> bool {
        self.is_in()
    }
}

/// Where the owner keeps each slot's [`TimerLink`].
pub trait Links {
    /// The link of slot `idx`.
    fn link(&mut self, idx: u32) -> &mut TimerLink;
}

/// The wheel: bucket heads, a bitmap of non-empty buckets, and the next tick to expire.
#[derive(Debug)]
pub struct TimerWheel {
    tick_us: u64,
    heads: Box<[u32]>,
    occupied: [u64; BUCKETS / 64],
    cursor: u64,
}

impl TimerWheel {
    /// A wheel with ticks of `tick_us` microseconds starting at `now`.
    pub fn new(tick_us: u64, now: Timestamp) -> Self {
        let tick_us = tick_us.max(1);
        Self {
            tick_us,
            heads: vec![NIL; BUCKETS].into_boxed_slice(),
            occupied: [0; BUCKETS / 64],
            cursor: now.as_micros() / tick_us,
        }
    }

    /// Arms slot `idx` for `deadline` (a slot already due no later stays where it is).
    pub fn arm(&mut self, links: &mut impl Links, idx: u32, deadline: Timestamp) {
        // Round up, so that a timer never fires early.
        let want = deadline.as_micros().div_ceil(self.tick_us);
        let tick = want.clamp(self.cursor, self.cursor + BUCKETS as u64 - 1);
        let link = *links.link(idx);
        if link.is_in() {
            if self.armed(link) <= tick {
                return;
            }
            self.cancel(links, idx);
        }
        let b = (tick % BUCKETS as u64) as usize;
        let head = self.heads[b];
        *links.link(idx) = TimerLink { prev: NIL, next: head, tick: ARMED | (tick as u32 & TICK_BITS) };
        if head != NIL {
            links.link(head).prev = idx;
        }
        self.heads[b] = idx;
        self.occupied[b / 64] |= 1 << (b % 64);
    }

    /// The tick of the bucket `link` is in: the one at or after the cursor, less than a ring's
    /// length away, with its low bits.
    fn armed(&self, link: TimerLink) -> u64 {
        let ahead = (link.tick & TICK_BITS).wrapping_sub(self.cursor as u32) & TICK_BITS;
        self.cursor + u64::from(ahead)
    }

    /// Takes slot `idx` out of the wheel, if it is in.
    pub fn cancel(&mut self, links: &mut impl Links, idx: u32) {
        let link @ TimerLink { prev, next, .. } = *links.link(idx);
        if !link.is_in() {
            return;
        }
        // 2^31 is a multiple of the ring's length: the low bits name the bucket.
        let b = (link.tick & TICK_BITS) as usize % BUCKETS;
        if prev == NIL {
            self.heads[b] = next;
            if next == NIL {
                self.occupied[b / 64] &= !(1 << (b % 64));
            }
        } else {
            links.link(prev).next = next;
        }
        if next != NIL {
            links.link(next).prev = prev;
        }
        *links.link(idx) = TimerLink::default();
    }

    /// Moves every slot whose bucket is due at `now` into `due` (unarmed). The owner handles
    /// each and arms it again from its real deadline.
    pub fn expire(&mut self, now: Timestamp, links: &mut impl Links, due: &mut Vec<u32>) {
        let now_tick = now.as_micros() / self.tick_us;
        while self.cursor <= now_tick {
            let b = (self.cursor % BUCKETS as u64) as usize;
            // Skip empty buckets a bitmap word at a time.
            let word = self.occupied[b / 64] >> (b % 64);
            if word == 0 {
                self.cursor += ((64 - b % 64) as u64).min(now_tick + 1 - self.cursor);
                continue;
            }
            let zeros = u64::from(word.trailing_zeros());
            if zeros > 0 {
                self.cursor += zeros.min(now_tick + 1 - self.cursor);
                continue;
            }
            let mut idx = std::mem::replace(&mut self.heads[b], NIL);
            self.occupied[b / 64] &= !(1 << (b % 64));
            while idx != NIL {
                let next = links.link(idx).next;
                *links.link(idx) = TimerLink::default();
                due.push(idx);
                idx = next;
            }
            self.cursor += 1;
        }
    }

    /// The earliest time a bucket may be due (its slots may turn out to be later), or `None`.
    pub fn next_due(&self) -> Option<Timestamp> {
        let start = (self.cursor % BUCKETS as u64) as usize;
        let words = self.occupied.len();
        for i in 0..=words {
            let w = (start / 64 + i) % words;
            let mut word = self.occupied[w];
            if i == 0 {
                word &= u64::MAX << (start % 64);
            } else if i == words {
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

    impl Links for Vec<TimerLink> {
        fn link(&mut self, idx: u32) -> &mut TimerLink {
            &mut self[idx as usize]
        }
    }

    fn ms(v: u64) -> Timestamp {
        Timestamp::from_micros(v * 1000)
    }

    fn setup(n: usize, now: Timestamp) -> (TimerWheel, Vec<TimerLink>, Vec<u32>) {
        (TimerWheel::new(1000, now), vec![TimerLink::default(); n], Vec::new())
    }

    #[test]
    fn fires_on_time_never_early() {
        let (mut w, mut l, mut due) = setup(3, ms(0));
        w.arm(&mut l, 0, ms(5));
        w.arm(&mut l, 1, Timestamp::from_micros(5_500));
        w.arm(&mut l, 2, ms(100));
        assert_eq!(w.next_due(), Some(ms(5)));
        w.expire(ms(4), &mut l, &mut due);
        assert!(due.is_empty());
        w.expire(ms(5), &mut l, &mut due);
        assert_eq!(due, [0]);
        assert!(!l[0].is_armed());
        due.clear();
        w.expire(ms(6), &mut l, &mut due);
        assert_eq!(due, [1], "5.5 ms rounds up to the 6 ms tick");
        assert_eq!(w.next_due(), Some(ms(100)));
    }

    #[test]
    fn later_deadline_stays_put_earlier_one_moves() {
        let (mut w, mut l, mut due) = setup(1, ms(0));
        w.arm(&mut l, 0, ms(10));
        w.arm(&mut l, 0, ms(50));
        assert_eq!(w.armed(l[0]), 10, "lazy: still in the 10 ms bucket");
        w.arm(&mut l, 0, ms(3));
        assert_eq!(w.armed(l[0]), 3);
        w.expire(ms(20), &mut l, &mut due);
        assert_eq!(due, [0], "in one bucket only");
    }

    #[test]
    fn cancel_from_any_position() {
        let (mut w, mut l, mut due) = setup(4, ms(0));
        for i in 0..4 {
            w.arm(&mut l, i, ms(7));
        }
        w.cancel(&mut l, 2);
        w.cancel(&mut l, 3);
        w.cancel(&mut l, 0);
        w.cancel(&mut l, 0);
        w.expire(ms(7), &mut l, &mut due);
        assert_eq!(due, [1]);
        w.arm(&mut l, 1, ms(9));
        w.cancel(&mut l, 1);
        assert_eq!(w.next_due(), None);
    }

    #[test]
    fn far_deadlines_wait_in_the_last_bucket() {
        let (mut w, mut l, mut due) = setup(1, ms(0));
        w.arm(&mut l, 0, ms(10_000));
        assert_eq!(w.armed(l[0]), BUCKETS as u64 - 1);
        w.expire(ms(5_000), &mut l, &mut due);
        assert_eq!(due, [0]);
        w.arm(&mut l, 0, ms(10_000));
        assert_eq!(w.armed(l[0]), 5_000 + BUCKETS as u64);
        due.clear();
        w.expire(ms(9_999), &mut l, &mut due);
        assert_eq!(due, [0]);
        w.arm(&mut l, 0, ms(10_000));
        due.clear();
        w.expire(ms(10_000), &mut l, &mut due);
        assert_eq!(due, [0]);
        assert_eq!(w.next_due(), None);
    }

    /// Ticks past 2^31 and 2^32 (a link keeps 31 bits of its tick): a wheel that has run for
    /// weeks arms, moves, cancels and fires as on its first day.
    #[test]
    fn ticks_past_the_bits_a_link_keeps() {
        for start in [(1u64 << 31) - 50, (1 << 32) - 50, (1 << 40) + (1 << 31) - 3] {
            let (mut w, mut l, mut due) = setup(4, ms(start));
            w.arm(&mut l, 0, ms(start + 10));
            w.arm(&mut l, 1, ms(start + 100));
            w.arm(&mut l, 2, ms(start + 60_000));
            w.arm(&mut l, 3, ms(start + 100));
            assert_eq!(w.armed(l[2]), start + BUCKETS as u64 - 1);
            // Later: stays; earlier: moves.
            w.arm(&mut l, 1, ms(start + 200));
            assert_eq!(w.armed(l[1]), start + 100);
            w.arm(&mut l, 1, ms(start + 60));
            assert_eq!(w.armed(l[1]), start + 60);
            w.cancel(&mut l, 3);
            assert!(!l[3].is_armed());
            assert_eq!(w.next_due(), Some(ms(start + 10)));
            w.expire(ms(start + 9), &mut l, &mut due);
            assert!(due.is_empty(), "never early");
            w.expire(ms(start + 10), &mut l, &mut due);
            assert_eq!(due, [0]);
            due.clear();
            w.expire(ms(start + 100), &mut l, &mut due);
            assert_eq!(due, [1]);
            due.clear();
            w.expire(ms(start + BUCKETS as u64 - 1), &mut l, &mut due);
            assert_eq!(due, [2], "from the last bucket, to be armed again");
            due.clear();
            w.arm(&mut l, 2, ms(start + 60_000));
            assert_eq!(w.armed(l[2]), start + 2 * BUCKETS as u64 - 1);
            w.arm(&mut l, 0, ms(start + 5_000));
            assert_eq!(w.armed(l[0]), start + 5_000);
            w.expire(ms(start + 5_000), &mut l, &mut due);
            assert_eq!(due, [0]);
            w.cancel(&mut l, 2);
            assert_eq!(w.next_due(), None);
        }
    }

    #[test]
    fn past_deadline_fires_at_next_expire() {
        let (mut w, mut l, mut due) = setup(1, ms(100));
        w.arm(&mut l, 0, ms(1));
        assert_eq!(w.next_due(), Some(ms(100)));
        w.expire(ms(100), &mut l, &mut due);
        assert_eq!(due, [0]);
    }
}
