//! Admission: whether a request may become a transfer, as a value computed from the request, its
//! source, the serving policy and a few facts about the worker. Nothing here touches a file, a
//! socket or the table, so every rule is testable from plain values.
//!
//! A request passes, in order: the broadcast check and the allow list ([`screen`], before the
//! datagram is even decoded; others are ignored silently), the refusals (mode, stopping, writes),
//! the per-source rate limit (only under pressure unless configured otherwise; dropped and
//! counted) and the fair share under pressure (ERROR 0 "server busy", never silence). The repeat
//! check comes before ([`super::Engine`] asks the transfer of the same client), and the file and
//! the room in the table after.

use std::net::IpAddr;

use super::fold::Reason;
use crate::config::ServePolicy;
use crate::proto::wire::{Mode, RequestKind};
use crate::proto::{ErrorCode, LocalFailure, Timestamp};
use crate::server::limits::SourceLimiter;
use crate::server::stats::Counter;

/// What becomes of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Admission {
    /// Dropped without an answer, for this reason (which names its counter).
    Ignore(Reason),
    /// Answered with the ERROR of `refusal`, counted in `counter`.
    Refuse {
        /// Why.
        refusal: Refusal,
        /// The counter it counts in.
        counter: Counter,
    },
    /// On to open the file and take a slot.
    Accept,
}

impl Admission {
    /// A refusal counted where its reason counts.
    pub(super) fn refuse(refusal: Refusal) -> Self {
        Self::Refuse { refusal, counter: refusal.counter() }
    }
}

/// Why a request is refused: the ERROR that answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Mail mode (RFC 1350's third mode) is not served.
    MailMode,
    /// The server is stopping.
    ShuttingDown,
    /// This server accepts no uploads.
    WritesDisabled,
    /// Uploads are not accepted from the request's source.
    WriteNotAllowedFrom,
    /// No room: the table is full of progressing transfers, or the source holds its share.
    Busy,
    /// The file is not readable by others, and only world-readable files are served.
    NotWorldReadable,
    /// The file cannot be served or written.
    File(LocalFailure),
}

impl Refusal {
    /// The code of the ERROR that answers it.
    pub(super) fn code(self) -> ErrorCode {
        match self {
            Self::MailMode => ErrorCode::ILLEGAL_OPERATION,
            Self::ShuttingDown | Self::Busy => ErrorCode::NOT_DEFINED,
            Self::WritesDisabled | Self::WriteNotAllowedFrom | Self::NotWorldReadable => ErrorCode::ACCESS_VIOLATION,
            Self::File(f) => f.code(),
        }
    }

    /// The message of that ERROR.
    pub(super) fn message(self) -> &'static str {
        match self {
            Self::MailMode => "mail mode is not supported",
            Self::ShuttingDown => "server is shutting down",
            Self::WritesDisabled => "writes are disabled on this server",
            Self::WriteNotAllowedFrom => "uploads are not allowed from this address",
            Self::Busy => "server busy, try again",
            Self::NotWorldReadable => LocalFailure::Denied.message(),
            Self::File(f) => f.message(),
        }
    }

    /// The `reason` of its record.
    pub(super) fn reason(self) -> Reason {
        match self {
            Self::MailMode => Reason::Mode,
            Self::ShuttingDown | Self::File(LocalFailure::ShuttingDown) => Reason::ShuttingDown,
            Self::WritesDisabled => Reason::WritesDisabled,
            Self::WriteNotAllowedFrom => Reason::WriteNotAllowed,
            Self::Busy => Reason::Busy,
            Self::NotWorldReadable => Reason::NotWorldReadable,
            Self::File(f) => file_reason(f),
        }
    }

    /// The counter it counts in by default: `busy` for lack of room, `not_found` for a missing
    /// file, `refused` otherwise.
    pub(super) fn counter(self) -> Counter {
        match self {
            Self::Busy => Counter::Busy,
            Self::File(LocalFailure::NotFound) => Counter::NotFound,
            _ => Counter::Refused,
        }
    }
}

/// The reason of a file that cannot be served or written: by the failure where it says more
/// than its ERROR code, else by the code (so that a new failure still gets a reason).
fn file_reason(f: LocalFailure) -> Reason {
    use LocalFailure as F;
    if matches!(f, F::ReadFailed | F::FileChanged) {
        Reason::ReadFailed
    } else if matches!(f, F::NetasciiTooLarge) {
        Reason::TooLarge
    } else if matches!(f, F::WriteFailed | F::CommitFailed) {
        Reason::WriteFailed
    } else if f.code() == ErrorCode::FILE_NOT_FOUND {
        Reason::NotFound
    } else if f.code() == ErrorCode::FILE_EXISTS {
        Reason::Exists
    } else if f.code() == ErrorCode::DISK_FULL {
        Reason::DiskFull
    } else {
        Reason::AccessDenied
    }
}

/// What admission needs to know about the worker.
#[derive(Clone, Copy, Debug)]
pub(super) struct Facts {
    /// The worker is stopping.
    pub(super) stopping: bool,
    /// The worker was given an upload directory.
    pub(super) uploads: bool,
    /// The worker is short of room (see `Engine::under_pressure`).
    pub(super) under_pressure: bool,
    /// The request's source holds its fair share of the table or more (see `sources.rs`).
    pub(super) at_share: bool,
}

/// Whether a datagram to the listening socket is looked at at all: requests to a broadcast
/// address and datagrams from outside the allow list are ignored.
pub(super) fn screen(to_broadcast: bool, peer: IpAddr, policy: &ServePolicy) -> Admission {
    //= https://www.rfc-editor.org/rfc/rfc1123#section-4.2.3.5
    //# A TFTP request directed to a broadcast address SHOULD be silently ignored.
    if to_broadcast {
        return Admission::Ignore(Reason::Broadcast);
    }
    if !policy.allow.is_empty() && !policy.allow.iter().any(|c| c.contains(peer)) {
        return Admission::Ignore(Reason::NotAllowed);
    }
    Admission::Accept
}

/// Whether request (`kind`, `mode`) from `peer` may become a transfer. The rate limiter, when
/// there is one, is charged a token once the request passes the refusals.
pub(super) fn admit(
    kind: RequestKind,
    mode: Mode,
    peer: IpAddr,
    policy: &ServePolicy,
    facts: &Facts,
    limiter: Option<&mut SourceLimiter>,
    now: Timestamp,
) -> Admission {
    let write = kind == RequestKind::Write;
    if mode == Mode::Mail {
        return Admission::refuse(Refusal::MailMode);
    }
    if facts.stopping {
        return Admission::refuse(Refusal::ShuttingDown);
    }
    if write && !facts.uploads {
        return Admission::refuse(Refusal::WritesDisabled);
    }
    if write && !policy.allow_write_from.is_empty() && !policy.allow_write_from.iter().any(|c| c.contains(peer)) {
        return Admission::refuse(Refusal::WriteNotAllowedFrom);
    }
    // Every new transfer spends a token, so the heaviest sources are the ones held back once
    // pressure starts; an idle server serves them all.
    let pressed = policy.rate_limit_always || facts.under_pressure;
    if let Some(l) = limiter {
        if !l.allow(peer, now) && pressed {
            return Admission::Ignore(Reason::RateLimited);
        }
    }
    // Under pressure no source holds more than its share of the table: a slow or hostile client
    // holding transfers open cannot lock the others out.
    if facts.under_pressure && facts.at_share {
        return Admission::refuse(Refusal::Busy);
    }
    Admission::Accept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cidr;

    const IDLE: Facts = Facts { stopping: false, uploads: true, under_pressure: false, at_share: false };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn read(policy: &ServePolicy, facts: &Facts, limiter: Option<&mut SourceLimiter>) -> Admission {
        admit(RequestKind::Read, Mode::Octet, ip("192.0.2.10"), policy, facts, limiter, Timestamp::ZERO)
    }

    #[test]
    fn an_idle_worker_accepts_a_read() {
        assert_eq!(read(&ServePolicy::default(), &IDLE, None), Admission::Accept);
    }

    #[test]
    fn refusals_come_with_their_error_and_counter() {
        let p = ServePolicy::default();
        let mail = admit(RequestKind::Read, Mode::Mail, ip("192.0.2.10"), &p, &IDLE, None, Timestamp::ZERO);
        assert_eq!(mail, Admission::Refuse { refusal: Refusal::MailMode, counter: Counter::Refused });
        assert_eq!(Refusal::MailMode.code(), ErrorCode::ILLEGAL_OPERATION);
        let stopping = Facts { stopping: true, ..IDLE };
        assert_eq!(read(&p, &stopping, None), Admission::refuse(Refusal::ShuttingDown));
        assert_eq!(Refusal::ShuttingDown.message(), "server is shutting down");
        let no_uploads = Facts { uploads: false, ..IDLE };
        let w = admit(RequestKind::Write, Mode::Octet, ip("192.0.2.10"), &p, &no_uploads, None, Timestamp::ZERO);
        assert_eq!(w, Admission::refuse(Refusal::WritesDisabled));
        assert_eq!(Refusal::WritesDisabled.code(), ErrorCode::ACCESS_VIOLATION);
        assert_eq!(Refusal::File(LocalFailure::NotFound).counter(), Counter::NotFound);
        assert_eq!(Refusal::Busy.counter(), Counter::Busy);
        assert_eq!(Refusal::File(LocalFailure::NotFound).reason().name(), "not_found");
        assert_eq!(Refusal::NotWorldReadable.code(), ErrorCode::ACCESS_VIOLATION);
    }

    #[test]
    fn uploads_only_from_their_networks() {
        let p = ServePolicy { allow_write_from: vec![Cidr::parse("10.0.0.0/8").unwrap()], ..Default::default() };
        let from = |s| admit(RequestKind::Write, Mode::Octet, ip(s), &p, &IDLE, None, Timestamp::ZERO);
        assert_eq!(from("10.1.2.3"), Admission::Accept);
        assert_eq!(from("192.0.2.10"), Admission::refuse(Refusal::WriteNotAllowedFrom));
    }

    #[test]
    fn broadcasts_and_strangers_are_ignored() {
        let p = ServePolicy { allow: vec![Cidr::parse("192.0.2.0/24").unwrap()], ..Default::default() };
        assert_eq!(screen(false, ip("192.0.2.10"), &p), Admission::Accept);
        assert_eq!(screen(true, ip("192.0.2.10"), &p), Admission::Ignore(Reason::Broadcast));
        assert_eq!(screen(false, ip("198.51.100.1"), &p), Admission::Ignore(Reason::NotAllowed));
        assert_eq!(Reason::NotAllowed.ignore_counter(), Counter::Ignored);
    }

    #[test]
    fn the_rate_limit_drops_only_under_pressure_unless_always() {
        let p = ServePolicy::default();
        let mut l = SourceLimiter::new(1.0, 1.0);
        assert_eq!(read(&p, &IDLE, Some(&mut l)), Admission::Accept);
        // The bucket is empty now, but an idle worker serves anyway.
        assert_eq!(read(&p, &IDLE, Some(&mut l)), Admission::Accept);
        let pressed = Facts { under_pressure: true, ..IDLE };
        assert_eq!(read(&p, &pressed, Some(&mut l)), Admission::Ignore(Reason::RateLimited));
        assert_eq!(Reason::RateLimited.ignore_counter(), Counter::RateLimited);
        let always = ServePolicy { rate_limit_always: true, ..Default::default() };
        assert_eq!(read(&always, &IDLE, Some(&mut l)), Admission::Ignore(Reason::RateLimited));
    }

    #[test]
    fn under_pressure_a_source_at_its_share_is_busy() {
        let p = ServePolicy::default();
        let at_share = Facts { under_pressure: true, at_share: true, ..IDLE };
        assert_eq!(read(&p, &at_share, None), Admission::refuse(Refusal::Busy));
        assert_eq!(read(&p, &Facts { at_share: false, ..at_share }, None), Admission::Accept);
        assert_eq!(read(&p, &Facts { under_pressure: false, ..at_share }, None), Admission::Accept);
    }
}
