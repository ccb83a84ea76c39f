//! A new serving policy, taken between two events of a loop turn (a reload), and the
//! retransmission settings each transfer keeps from its start.
//!
//! New requests see all of the new policy: allow lists, negotiation limits and refused options,
//! upload policy, per-source rate, request logging, world-readable-only. Transfers in flight go on
//! as they started: the options granted, the file version, and the retransmission settings. The
//! protocol core is handed its [`RetransmitConfig`] with every call rather than storing it (it is
//! the same for thousands of transfers), so the engine keeps the few settings still used by some
//! transfer in [`Retransmits`] and each transfer holds a 2-byte index into it
//! ([`Transfer::retransmit`](super::table::Transfer::retransmit)). The index sits in padding the
//! slot already had: a copy of the settings in each transfer would add 88 bytes to every slot,
//! an `Arc` 8 bytes and an atomic count at every start and end.

use std::sync::Arc;

use tracing::debug;

use super::Engine;
use crate::config::ServePolicy;
use crate::proto::{RetransmitConfig, Timestamp};
use crate::server::limits::SourceLimiter;

impl Engine {
    /// Serves new requests under `policy`; transfers in flight keep what they started with. The
    /// per-source buckets start again full when the rate changed (else they are kept), and the
    /// file cache forgets every version (transfers keep theirs): the next request of each file
    /// opens and maps it again, so that a file changed on disk in a way its `statx` identity
    /// does not show is served anew.
    pub(crate) fn set_policy(&mut self, policy: Arc<ServePolicy>, now: Timestamp) {
        debug!(worker = self.worker, transfers = self.active, "serving policy replaced");
        if policy.source_limit() != self.policy.source_limit() {
            self.limiter = policy.source_limit().map(|rate| SourceLimiter::worker_share(rate, self.settings.workers));
        }
        self.files.set_world_readable_only(policy.world_readable_only);
        self.files.forget(now);
        let table = &self.table;
        self.retransmits.set(policy.retransmit, || table.transfers().map(|t| t.route.retransmit()));
        self.policy = policy;
    }
}

/// The retransmission settings of a worker's transfers, by index: those of the policy in force,
/// which new transfers take ([`current`](Self::current)), and those of earlier policies that a
/// transfer still uses. An entry no transfer uses is reused by the next change, so there are no
/// more entries than distinct settings in use, plus one.
#[derive(Debug)]
pub(super) struct Retransmits {
    entries: Vec<RetransmitConfig>,
    current: u8,
}

impl Retransmits {
    /// `cfg` for every transfer.
    pub(super) fn new(cfg: RetransmitConfig) -> Self {
        Self { entries: vec![cfg], current: 0 }
    }

    /// The index of the settings new transfers take.
    pub(super) fn current(&self) -> u8 {
        self.current
    }

    /// The settings new transfers take.
    pub(super) fn in_force(&self) -> &RetransmitConfig {
        self.get(self.current)
    }

    /// The settings at index `i` (from [`current`](Self::current) when its transfer started).
    pub(super) fn get(&self, i: u8) -> &RetransmitConfig {
        &self.entries[usize::from(i)]
    }

    /// Settings kept (in force, or used by a transfer), for tests.
    #[cfg(test)]
    pub(super) fn entries_len(&self) -> usize {
        self.entries.len()
    }

    /// New transfers take `cfg`; `in_use` lists the index of each transfer held, so that only
    /// entries none of them uses are replaced. (Only when the `u8` indices are all held, one
    /// per distinct setting, do the transfers of the current entry move to `cfg`.)
    pub(super) fn set<I: Iterator<Item = u8>>(&mut self, cfg: RetransmitConfig, in_use: impl FnOnce() -> I) {
        if *self.get(self.current) == cfg {
            return;
        }
        if let Some(i) = self.entries.iter().position(|e| *e == cfg) {
            self.current = i as u8;
            return;
        }
        let mut used = vec![false; self.entries.len()];
        for i in in_use() {
            used[usize::from(i)] = true;
        }
        self.current = match used.iter().position(|u| !u) {
            Some(free) => {
                self.entries[free] = cfg;
                free as u8
            }
            None if self.entries.len() <= usize::from(u8::MAX) => {
                self.entries.push(cfg);
                (self.entries.len() - 1) as u8
            }
            None => {
                self.entries[usize::from(self.current)] = cfg;
                self.current
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::retransmit;
    use crate::proto::RtoBounds;

    fn cfg(initial_ms: u64) -> RetransmitConfig {
        let ms = Duration::from_millis;
        retransmit(RtoBounds { initial: ms(initial_ms), min: ms(10), max: ms(2000) }, 6)
    }

    #[test]
    fn settings_in_use_are_kept_and_unused_ones_reused() {
        let mut r = Retransmits::new(cfg(1000));
        let first = r.current();
        r.set(cfg(500), || [first].into_iter());
        let second = r.current();
        assert_ne!(first, second, "a transfer still uses the first settings");
        assert_eq!(r.get(first).rto.initial, Duration::from_millis(1000));
        assert_eq!(r.get(second).rto.initial, Duration::from_millis(500));
        // The transfers of the first settings ended: their entry takes the next change.
        r.set(cfg(250), || [second].into_iter());
        assert_eq!(r.current(), first);
        assert_eq!(r.get(second).rto.initial, Duration::from_millis(500));
        assert_eq!(r.entries.len(), 2);
        // Settings seen before are found again, unchanged settings change nothing.
        r.set(cfg(500), std::iter::empty);
        assert_eq!(r.current(), second);
        r.set(cfg(500), || -> std::iter::Empty<u8> { unreachable!("no scan for unchanged settings") });
        assert_eq!(r.current(), second);
    }

    #[test]
    fn with_every_index_held_the_current_settings_change_in_place() {
        let mut r = Retransmits::new(cfg(1));
        for ms in 2..=256 {
            let held = r.entries.len() as u8;
            r.set(cfg(ms), || 0..held);
        }
        assert_eq!((r.entries.len(), r.current()), (256, 255));
        r.set(cfg(300), || 0..=255);
        assert_eq!((r.entries.len(), r.current()), (256, 255));
        assert_eq!(r.get(255).rto.initial, Duration::from_millis(300));
        assert_eq!(r.get(0).rto.initial, Duration::from_millis(1));
    }
}
