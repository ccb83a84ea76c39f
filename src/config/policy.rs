//! The serving policy: who is served, what negotiation grants, how transfers retransmit, what
//! uploads may do. The part of the configuration a live reload may replace.

use std::time::Duration;

use super::{Cidr, LookupPolicy};
use crate::fs::WritePolicy;
use crate::proto::options::Limits;
use crate::proto::{RetransmitConfig, RtoBounds};

/// The serving policy: who is served, what is granted, how transfers retransmit and what
/// uploads may do. The part of the configuration a live reload may replace.
#[derive(Clone, Debug, PartialEq)]
pub struct ServePolicy {
    /// Networks served; empty: everyone. Requests from elsewhere are ignored silently.
    pub allow: Vec<Cidr>,
    /// Networks uploads are accepted from; empty: every client `allow` lets in.
    pub allow_write_from: Vec<Cidr>,
    /// What negotiation may grant. The blind budget that the port settings call for is added
    /// by [`ServerConfig::effective_policy`](super::ServerConfig::effective_policy).
    pub limits: Limits,
    /// Retransmission timeouts and patience; build it with [`retransmit`] so that patience and
    /// the silence bound follow from the timeout and the retries.
    pub retransmit: RetransmitConfig,
    /// New transfers each source may start while the server is under pressure; `None` or a rate
    /// of 0: no limit.
    pub rate_per_source: Option<SourceRate>,
    /// Apply `rate_per_source` at all times, not only under pressure.
    pub rate_limit_always: bool,
    /// Log every request as it arrives, before anything is decided about it.
    pub log_requests: bool,
    /// Serve only files that every user of the host may read (mode `o+r`), as tftpd-hpa running
    /// as `nobody` and dnsmasq do; a file readable only through this process's privileges is
    /// refused with ERROR 2.
    pub world_readable_only: bool,
    /// What uploads may do, when [`ServerConfig::write`](super::ServerConfig::write) accepts them.
    pub upload: WritePolicy,
    /// How filenames become files: map file, name fixes, per-client views (all off by
    /// default; see [`LookupPolicy`]).
    pub lookup: LookupPolicy,
}

/// A token bucket for the new transfers of one source, over the whole server (each worker
/// holds an even share).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SourceRate {
    /// Tokens per second (0: no limit).
    pub per_second: f64,
    /// Bucket size: new transfers a source may start at once (at least 1).
    pub burst: f64,
}

/// Retransmission settings from the timeout bounds and the retries: a client is given up after
/// `max_retries` timeouts in a row and at least `initial × max_retries` of silence, and whatever
/// its own `timeout` option asks, after at most twice that or [`MAX_SILENCE`], whichever is
/// longer.
///
/// [`MAX_SILENCE`]: crate::proto::sender::MAX_SILENCE
pub fn retransmit(rto: RtoBounds, max_retries: u8) -> RetransmitConfig {
    let patience = rto.initial.saturating_mul(u32::from(max_retries));
    let max_silence = crate::proto::sender::MAX_SILENCE.max(patience.saturating_mul(2));
    RetransmitConfig { rto, max_retries, patience, max_silence }
}

impl Default for ServePolicy {
    fn default() -> Self {
        let rto =
            RtoBounds { initial: Duration::from_secs(1), min: Duration::from_millis(10), max: Duration::from_secs(2) };
        Self {
            allow: Vec::new(),
            allow_write_from: Vec::new(),
            limits: Limits::default(),
            retransmit: retransmit(rto, 6),
            rate_per_source: Some(SourceRate { per_second: 100.0, burst: 500.0 }),
            rate_limit_always: false,
            log_requests: false,
            world_readable_only: true,
            upload: WritePolicy { create: false, overwrite: false, mode: 0o644, max_size: 1 << 30 },
            lookup: LookupPolicy::default(),
        }
    }
}

impl ServePolicy {
    /// The per-source limit in force, if any (a rate of 0 is none).
    pub fn source_limit(&self) -> Option<SourceRate> {
        self.rate_per_source.filter(|r| r.per_second > 0.0)
    }

    /// The settings that differ between `self` and `other`, by command-line flag (the field's
    /// path where no flag sets it), in the order of the fields: what a reload reports as
    /// changed.
    pub fn differences(&self, other: &ServePolicy) -> Vec<&'static str> {
        // Destructured whole, so that a field added here must be given its name below.
        let ServePolicy {
            allow,
            allow_write_from,
            limits,
            retransmit,
            rate_per_source,
            rate_limit_always,
            log_requests,
            world_readable_only,
            upload,
            lookup,
        } = self;
        let (rto, o_rto) = (&retransmit.rto, &other.retransmit.rto);
        let retries = retransmit.max_retries != other.retransmit.max_retries;
        // Patience and the silence bound follow from the timeout and the retries (see
        // [`retransmit`]): named on their own only when set apart from them.
        let patience = retransmit.patience != other.retransmit.patience && rto.initial == o_rto.initial && !retries;
        let max_silence =
            retransmit.max_silence != other.retransmit.max_silence && retransmit.patience == other.retransmit.patience;
        let rate = |p: &ServePolicy| p.rate_per_source.map(|r| r.per_second);
        let burst = |p: &ServePolicy| p.rate_per_source.map(|r| r.burst);
        [
            (*allow != other.allow, "--allow"),
            (*allow_write_from != other.allow_write_from, "--allow-write-from"),
            (limits.max_blksize != other.limits.max_blksize, "--max-blksize"),
            (limits.max_windowsize != other.limits.max_windowsize, "--max-windowsize"),
            (limits.max_window_bytes != other.limits.max_window_bytes, "limits.max_window_bytes"),
            (limits.refuse != other.limits.refuse, "--refuse-option"),
            (rto.initial != o_rto.initial, "--timeout"),
            (rto.min != o_rto.min, "--min-rto"),
            (rto.max != o_rto.max, "--max-rto"),
            (retries, "--retries"),
            (patience, "retransmit.patience"),
            (max_silence, "retransmit.max_silence"),
            (*rate_per_source != other.rate_per_source && rate(self) != rate(other), "--rate-per-source"),
            (*rate_per_source != other.rate_per_source && burst(self) != burst(other), "--burst-per-source"),
            (*rate_limit_always != other.rate_limit_always, "--rate-limit-always"),
            (*log_requests != other.log_requests, "--log-requests"),
            (*world_readable_only != other.world_readable_only, "--serve-private-files"),
            (upload.create != other.upload.create, "--create"),
            (upload.overwrite != other.upload.overwrite, "--overwrite"),
            (upload.mode != other.upload.mode, "--umask"),
            (upload.max_size != other.upload.max_size, "--max-upload-size"),
        ]
        .into_iter()
        .chain(lookup.differences(&other.lookup))
        .filter_map(|(differs, name)| differs.then_some(name))
        .collect()
    }
}
