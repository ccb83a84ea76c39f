//! The receiving half of a transfer: accepts DATA blocks in order and decides when to ACK
//! (RFC 7440 §4): at the end of each of the sender's windows, at the final block, and once when a
//! gap shows that a block was lost (acknowledging the last block received in order).
//!
//! The receiver keeps the block at which it expects the sender's current window to end. When the
//! sender goes back (after its timeout, because an ACK was lost), the blocks it resends show where
//! its new window starts, and the expected end moves there: without that, a receiver counting
//! from its own last ACK waits for blocks the sender will not send until a timer fires. Once the
//! expected end is already received, the last in-order block is acknowledged at once, which is
//! also how a lock-step receiver answers a repeated block. A duplicate that falls inside the
//! current window (the network duplicated a packet) changes nothing: an ACK there would read as a
//! gap report and make the sender resend the rest of its window for nothing.
//!
//! Shared by a client's downloads and the server's uploads.

/// What a DATA block was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// The next block in order; its payload belongs at `offset`.
    InOrder {
        /// Byte offset of the payload.
        offset: u64,
        /// Absolute block number (1-based, not wrapped).
        block: u64,
        /// It was shorter than blksize: the transfer is complete.
        last: bool,
    },
    /// A block received before.
    Duplicate,
    /// A block beyond the next one: an earlier block was lost or reordered.
    Gap,
    /// Longer than the block size: a protocol violation.
    Oversized,
}

/// Receiver state of one transfer.
#[derive(Clone, Copy, Debug)]
pub struct WindowReceiver {
    /// Next block expected, 1-based.
    expected: u64,
    /// The block that ends the sender's current window, as far as the receiver can tell.
    window_end: u64,
    /// The last block acknowledged, and the last acknowledged at a window end (not a gap
    /// report): a sender that goes back restarts right after one of these, in window steps.
    acked: u64,
    aligned: u64,
    blksize: u16,
    window: u16,
    /// Duplicates seen after the final block.
    dups: u16,
    gap_reported: bool,
    finished: bool,
}

impl WindowReceiver {
    /// A receiver for blocks of `blksize` bytes acknowledged every `window` blocks.
    pub fn new(blksize: u16, window: u16) -> Self {
        let window = window.clamp(1, super::options::MAX_WINDOWSIZE);
        Self {
            expected: 1,
            window_end: u64::from(window),
            acked: 0,
            aligned: 0,
            blksize,
            window,
            dups: 0,
            gap_reported: false,
            finished: false,
        }
    }

    /// Classifies a DATA block of `len` bytes with wire number `block`, and returns the ACK to
    /// send now, if any (a wire block number).
    pub fn on_data(&mut self, block: u16, len: usize) -> (Received, Option<u16>) {
        if len > usize::from(self.blksize) {
            return (Received::Oversized, None);
        }
        let w = u64::from(self.window);
        let last_in_order = self.expected - 1;
        // Signed distance from the expected block: unambiguous for windows up to 32768.
        let d = block.wrapping_sub(self.expected as u16) as i16;
        if self.finished {
            // The sender missed the final ACK: answer once per window of repeats.
            let ack = (self.dups % self.window == 0).then(|| self.last_acked());
            self.dups = self.dups.wrapping_add(1);
            return (Received::Duplicate, ack);
        }
        if d < 0 {
            // A block from before the first one (block 0 at the start, or a distance reaching
            // past the beginning) is stale: nothing to learn from it.
            let Some(dup) = (last_in_order + 1).checked_sub(u64::from(d.unsigned_abs())).filter(|&b| b >= 1) else {
                return (Received::Duplicate, None);
            };
            // A sender that went back restarts one block after an ACK it received, and our
            // ACKs fall on window steps: other duplicates are the network's doing.
            let step = |from: u64| (dup as i64 - 1 - from as i64).rem_euclid(w as i64) == 0;
            if step(self.acked) || step(self.aligned) {
                // The window starting here ends at dup + window - 1.
                self.window_end = self.window_end.min(dup + w - 1);
                self.aligned = dup - 1;
            }
            if self.window_end <= last_in_order {
                return (Received::Duplicate, Some(self.ack(last_in_order, true)));
            }
            return (Received::Duplicate, None);
        }
        if d > 0 {
            //= https://www.rfc-editor.org/rfc/rfc7440#section-4
            //# the receiver [...] SHOULD send an ACK for the last block received in order
            // If the report arrives, the sender's next window starts after it.
            let ack = (!self.gap_reported).then(|| self.ack(last_in_order, false));
            self.gap_reported = true;
            return (Received::Gap, ack);
        }
        let abs = self.expected;
        let offset = (abs - 1) * u64::from(self.blksize);
        self.expected += 1;
        self.gap_reported = false;
        let last = len < usize::from(self.blksize);
        let ack = (last || abs >= self.window_end).then(|| self.ack(abs, true));
        self.finished |= last;
        (Received::InOrder { offset, block: abs, last }, ack)
    }

    /// Records an ACK of `block` (absolute) and returns its wire number.
    fn ack(&mut self, block: u64, window_end: bool) -> u16 {
        self.acked = block;
        if window_end {
            self.aligned = block;
        }
        self.window_end = block + u64::from(self.window);
        block as u16
    }

    /// The wire number of the last block received in order (0 before any).
    pub fn last_acked(&self) -> u16 {
        (self.expected - 1) as u16
    }

    /// Whether the final block has arrived.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Number of blocks received in order.
    pub fn blocks(&self) -> u64 {
        self.expected - 1
    }

    /// The block size.
    pub fn blksize(&self) -> u16 {
        self.blksize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_at_window_end_and_final_block() {
        let mut r = WindowReceiver::new(512, 4);
        for b in 1..=3 {
            assert_eq!(r.on_data(b, 512).1, None);
        }
        let (k, ack) = r.on_data(4, 512);
        assert_eq!(k, Received::InOrder { offset: 1536, block: 4, last: false });
        assert_eq!(ack, Some(4));
        assert_eq!(r.on_data(5, 100), (Received::InOrder { offset: 2048, block: 5, last: true }, Some(5)));
        assert!(r.is_finished());
    }

    #[test]
    fn gap_acked_once_with_last_in_order_block() {
        let mut r = WindowReceiver::new(512, 8);
        r.on_data(1, 512);
        r.on_data(2, 512);
        assert_eq!(r.on_data(4, 512), (Received::Gap, Some(2)));
        assert_eq!(r.on_data(5, 512), (Received::Gap, None));
        assert_eq!(r.on_data(3, 512).0, Received::InOrder { offset: 1024, block: 3, last: false });
        assert_eq!(r.on_data(5, 512), (Received::Gap, Some(3)), "a new gap is reported again");
    }

    #[test]
    fn duplicates_reacked_once_per_window() {
        let mut r = WindowReceiver::new(512, 1);
        r.on_data(1, 512);
        assert_eq!(r.on_data(1, 512), (Received::Duplicate, Some(1)));
        assert_eq!(r.on_data(1, 512), (Received::Duplicate, Some(1)), "lockstep: every duplicate");
        let mut r = WindowReceiver::new(512, 4);
        for b in 1..=4 {
            r.on_data(b, 512);
        }
        let acks: Vec<_> = (1..=8).map(|b| r.on_data(((b - 1) % 4) + 1, 512).1).collect();
        assert_eq!(acks, [Some(4), None, None, None, Some(4), None, None, None]);
    }

    #[test]
    fn blocks_before_the_first_are_stale_not_a_panic() {
        for window in [1, 4] {
            let mut r = WindowReceiver::new(512, window);
            assert_eq!(r.on_data(0, 512), (Received::Duplicate, None));
            assert_eq!(r.on_data(40_000, 512), (Received::Duplicate, None));
            r.on_data(1, 512);
            assert_eq!(r.on_data(0, 512), (Received::Duplicate, None));
            assert_eq!(r.on_data(1, 512).0, Received::Duplicate);
        }
    }

    #[test]
    fn oversized_and_rollover() {
        let mut r = WindowReceiver::new(8, 1);
        assert_eq!(r.on_data(1, 9).0, Received::Oversized);
        for i in 1..=70_000u64 {
            let (k, ack) = r.on_data(i as u16, 8);
            assert_eq!(k, Received::InOrder { offset: (i - 1) * 8, block: i, last: false });
            assert_eq!(ack, Some(i as u16));
        }
        assert_eq!(r.on_data(70_001u64 as u16, 0).0, Received::InOrder { offset: 560_000, block: 70_001, last: true });
    }
}
