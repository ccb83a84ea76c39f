//! A request's records: the one place where a request becomes its log record (`request` on
//! arrival with `--log-requests`; `request refused`, `request ignored` or `requests folded` when
//! it becomes no transfer; `transfer finished`, with counters and a latency sample, when its
//! transfer ends), and a download's time-to-first-ACK sample when its client first acknowledges. Their fields are documented in docs/logs.md; tests and scripts parse them.
//! Values the client chose (file names, options, its ERROR message) are string fields: the
//! formatter quotes and escapes them.

use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::net::IpAddr;
use std::ptr::NonNull;
use std::rc::Rc;
use std::time::Duration;

use tracing::info;

use super::Engine;
use super::fold::{Folded, Reason};
use super::kind::Kind;
use super::resolve::Decided;
use super::table::Transfer;
use crate::fs::FileVersion;
use crate::proto::options::OackShape;
use crate::proto::wire::{Options, Packet, Request};
use crate::proto::{ErrorCode, Negotiated, Outcome, Timestamp};
use crate::server::io::{Datagram, Io, Via};
use crate::server::stats::{self, Counter, Counters, Direction, Finish, Latencies};

/// What a transfer keeps of its request for its record, in one allocation shared by every
/// transfer held for the same request (none per packet; see [`Table::asked`]): a header (the
/// address the request was sent to, the options as negotiated, what decided the file; 12 to 37
/// bytes, 20 for an IPv4 request with tsize) and the request datagram itself, whose bytes give
/// the file name and options in the client's spelling and tell a repeat from a new request.
///
/// Eight bytes in the transfer: a thin pointer to the allocation, whose first four bytes hold
/// its length, the next four how many hold it (a worker's transfers are on one thread), and the
/// next eight the file version a read serves (a strong reference, or 0 for an upload): the
/// transfers of one request share it with the request.
///
/// The header: the local address's tag (0 none, 4, 6) and its 0, 4 or 16 bytes; a byte of
/// [`Flags`]; blksize, windowsize and the OACK's shape, two bytes each; then, when their flag
/// says so, the timeout (1 byte), tsize (8) and the map file rule's line (4).
///
/// [`Table::asked`]: super::table::Table::asked
pub(super) struct Asked(NonNull<u8>);

/// Bits of [`Asked`]'s flag byte.
struct Flags;

impl Flags {
    const TIMEOUT: u8 = 1;
    const TSIZE: u8 = 2;
    const LOOKUP: u8 = 4;
    const RULE: u8 = 8;
    const TRIMMED: u8 = 16;
    const PREFIX: u8 = 32;
    const VIEW: u8 = 64;
    const CASE: u8 = 128;
}

/// The bytes of [`Asked`]'s length.
const LEN: usize = 4;

/// The bytes of [`Asked`]'s count of holders.
const HOLDERS: usize = 4;

/// The bytes of [`Asked`]'s file version: its address, 0 for none.
const FILE: usize = 8;

/// Where [`Asked`]'s header starts.
const BYTES: usize = LEN + HOLDERS + FILE;

/// The longest header of [`Asked`].
const HEADER_MAX: usize = 1 + 16 + 1 + 6 + 1 + 8 + 4;

/// The header of an [`Asked`] being made, on the stack: what the request is looked up by
/// before anything is allocated.
pub(super) struct AskedHeader {
    bytes: [u8; HEADER_MAX],
    len: usize,
}

impl AskedHeader {
    /// The header of a request sent to `local`, with the options granted and the lookup.
    pub(super) fn new(local: Option<IpAddr>, granted: &Negotiated, lookup: Option<Decided>) -> Self {
        let mut h = Self { bytes: [0; HEADER_MAX], len: 0 };
        match local {
            None => h.put(&[0]),
            Some(IpAddr::V4(a)) => {
                h.put(&[4]);
                h.put(&a.octets());
            }
            Some(IpAddr::V6(a)) => {
                h.put(&[6]);
                h.put(&a.octets());
            }
        }
        let mut flags = 0;
        for (on, bit) in [(granted.timeout.is_some(), Flags::TIMEOUT), (granted.tsize.is_some(), Flags::TSIZE)] {
            flags |= if on { bit } else { 0 };
        }
        if let Some(d) = lookup {
            flags |= Flags::LOOKUP;
            for (on, bit) in [
                (d.rule.is_some(), Flags::RULE),
                (d.trimmed, Flags::TRIMMED),
                (d.prefix, Flags::PREFIX),
                (d.view, Flags::VIEW),
                (d.case, Flags::CASE),
            ] {
                flags |= if on { bit } else { 0 };
            }
        }
        h.put(&[flags]);
        h.put(&granted.blksize.to_le_bytes());
        h.put(&granted.windowsize.to_le_bytes());
        h.put(&granted.shape().to_bits().to_le_bytes());
        if let Some(t) = granted.timeout {
            h.put(&[t]);
        }
        if let Some(t) = granted.tsize {
            h.put(&t.to_le_bytes());
        }
        if let Some(rule) = lookup.and_then(|d| d.rule) {
            h.put(&rule.to_le_bytes());
        }
        h
    }

    fn put(&mut self, bytes: &[u8]) {
        self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Its bytes.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Asked {
    /// Keeps `request` with the address it was sent to, the options granted and the lookup, in
    /// an allocation of its own.
    #[cfg(test)]
    pub(super) fn new(request: &[u8], local: Option<IpAddr>, granted: &Negotiated, lookup: Option<Decided>) -> Self {
        Self::with_header(&AskedHeader::new(local, granted, lookup), request, None)
    }

    /// Keeps `request` with `header` and the `file` version it is served from, in an
    /// allocation of its own, held once.
    pub(super) fn with_header(header: &AskedHeader, request: &[u8], file: Option<Rc<FileVersion>>) -> Self {
        let len = BYTES + header.len + request.len();
        let mut v = Vec::with_capacity(len);
        v.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
        v.extend_from_slice(&1u32.to_le_bytes());
        let file = file.map_or(0, |f| Rc::into_raw(f).expose_provenance() as u64);
        v.extend_from_slice(&file.to_le_bytes());
        v.extend_from_slice(header.bytes());
        v.extend_from_slice(request);
        // The length written first is the slice's: a datagram is far shorter than 4 GiB, and
        // nothing longer is ever kept.
        v.truncate(u32::MAX as usize);
        Self(NonNull::from(Box::leak(v.into_boxed_slice())).cast::<u8>())
    }

    /// Whether this is what `header`, `request` and `file` would keep.
    pub(super) fn is(&self, header: &AskedHeader, request: &[u8], file: Option<&Rc<FileVersion>>) -> bool {
        self.file_ptr() == file.map(Rc::as_ptr)
            && self.bytes().split_at_checked(header.len).is_some_and(|(h, r)| h == header.bytes() && r == request)
    }

    /// The address of the file version held, if any.
    fn file_ptr(&self) -> Option<*const FileVersion> {
        let addr = u64::from_le_bytes(self.all()[LEN + HOLDERS..BYTES].try_into().unwrap_or_default());
        (addr != 0).then(|| std::ptr::with_exposed_provenance::<FileVersion>(addr as usize))
    }

    /// The name of the file version a read serves.
    pub(super) fn file_name(&self) -> Option<&str> {
        // SAFETY: as in `file`; the reference lives no longer than `self`, which keeps the
        // file version alive.
        self.file_ptr().map(|p| unsafe { &*p }.name())
    }

    /// The file version a read serves, borrowed from this allocation's reference.
    pub(super) fn file(&self) -> Option<FileRef<'_>> {
        // SAFETY: a non-zero address is that of `Rc::into_raw` in `with_header`, exposed there,
        // whose strong reference the allocation keeps until its last holder drops it (in
        // `drop`); the `Rc` made here is never dropped (ManuallyDrop) and lives no longer than
        // `self`, so the count stays exact.
        self.file_ptr().map(|p| FileRef(ManuallyDrop::new(unsafe { Rc::from_raw(p) }), PhantomData))
    }

    /// Whether `other` holds the same allocation.
    pub(super) fn same(&self, other: &Self) -> bool {
        self.0 == other.0
    }

    /// How many hold the allocation.
    pub(super) fn holders(&self) -> u32 {
        // SAFETY: `self.0` is the start of the allocation made in `with_header`, alive while
        // anyone holds it; its bytes LEN..LEN + HOLDERS are the count (unaligned: read as bytes).
        unsafe { u32::from_le_bytes(self.0.add(LEN).cast::<[u8; HOLDERS]>().read()) }
    }

    fn set_holders(&self, n: u32) {
        // SAFETY: as in `holders`. The allocation is only reached from the one thread that holds
        // its `Asked`s (`Asked` is neither Send nor Sync), and no reference into its count
        // bytes is ever made, so this write aliases nothing.
        unsafe { self.0.add(LEN).cast::<[u8; HOLDERS]>().write(n.to_le_bytes()) }
    }

    /// The whole allocation: its length, its holders, the header, the request.
    fn all(&self) -> &[u8] {
        // SAFETY: `self.0` is the start of the boxed slice leaked in `with_header`, alive while
        // anyone holds it; its first LEN bytes are its length, written there (at most u32::MAX).
        unsafe {
            let len = u32::from_le_bytes(self.0.cast::<[u8; LEN]>().read()) as usize;
            std::slice::from_raw_parts(self.0.as_ptr(), len)
        }
    }

    /// The header and the request.
    fn bytes(&self) -> &[u8] {
        &self.all()[BYTES..]
    }

    /// The header's fields: the local address, the flags, and where the flag byte is.
    fn local_and_flags(&self) -> (Option<IpAddr>, u8, usize) {
        let b = self.bytes();
        let (local, at) = match b[0] {
            4 => (<[u8; 4]>::try_from(&b[1..5]).ok().map(IpAddr::from), 5),
            6 => (<[u8; 16]>::try_from(&b[1..17]).ok().map(IpAddr::from), 17),
            _ => (None, 1),
        };
        (local, b[at], at)
    }

    /// Where the optional fields start, and the length of the header.
    fn layout(&self) -> (usize, usize) {
        let (_, flags, at) = self.local_and_flags();
        let optional = at + 1 + 6;
        let mut len = optional;
        for (bit, bytes) in [(Flags::TIMEOUT, 1), (Flags::TSIZE, 8), (Flags::RULE, 4)] {
            len += if flags & bit != 0 { bytes } else { 0 };
        }
        (optional, len)
    }

    /// The header.
    pub(super) fn header(&self) -> &[u8] {
        &self.bytes()[..self.layout().1]
    }

    /// The request datagram.
    pub(super) fn request(&self) -> &[u8] {
        &self.bytes()[self.layout().1..]
    }

    /// The address the request was sent to, when known.
    pub(super) fn local(&self) -> Option<IpAddr> {
        self.local_and_flags().0
    }

    /// The options as negotiated.
    pub(super) fn granted(&self) -> Negotiated {
        let (_, flags, at) = self.local_and_flags();
        let b = self.bytes();
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let mut i = self.layout().0;
        let timeout = (flags & Flags::TIMEOUT != 0).then(|| {
            i += 1;
            b[i - 1]
        });
        let tsize = (flags & Flags::TSIZE != 0).then(|| {
            i += 8;
            u64::from_le_bytes(b[i - 8..i].try_into().unwrap_or_default())
        });
        Negotiated::with_shape(OackShape::from_bits(u16_at(at + 5)), u16_at(at + 1), u16_at(at + 3), timeout, tsize)
    }

    /// What decided the file served beside normalisation (a rule, a fix, a view), if anything.
    pub(super) fn lookup(&self) -> Option<Decided> {
        let (_, flags, _) = self.local_and_flags();
        let b = self.bytes();
        let end = self.layout().1;
        (flags & Flags::LOOKUP != 0).then(|| Decided {
            rule: (flags & Flags::RULE != 0)
                .then(|| u32::from_le_bytes(b[end - 4..end].try_into().unwrap_or_default())),
            trimmed: flags & Flags::TRIMMED != 0,
            prefix: flags & Flags::PREFIX != 0,
            view: flags & Flags::VIEW != 0,
            case: flags & Flags::CASE != 0,
        })
    }
}

impl Clone for Asked {
    /// Holds the same allocation once more.
    fn clone(&self) -> Self {
        match self.holders().checked_add(1) {
            Some(n) => {
                self.set_holders(n);
                Self(self.0)
            }
            // Never with fewer than 2^32 transfers; a copy of its own keeps the count exact.
            None => {
                let (header, request) = self.bytes().split_at(self.header().len());
                let mut h = AskedHeader { bytes: [0; HEADER_MAX], len: 0 };
                h.put(header);
                Self::with_header(&h, request, self.file().map(|f| Rc::clone(&f)))
            }
        }
    }
}

impl Drop for Asked {
    fn drop(&mut self) {
        let holders = self.holders();
        if holders > 1 {
            self.set_holders(holders - 1);
            return;
        }
        if let Some(p) = self.file_ptr() {
            // SAFETY: the strong reference `with_header` leaked (see `file`), given back once,
            // here, by the allocation's last holder.
            drop(unsafe { Rc::from_raw(p) });
        }
        let len = self.all().len();
        // SAFETY: `self.0` and `len` are the pointer and length of the boxed slice leaked in
        // `with_header`, given back once, here, by its last holder.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.0.as_ptr(), len)) });
    }
}

/// A read's file version, borrowed from its [`Asked`] (see [`Asked::file`]).
pub(super) struct FileRef<'a>(ManuallyDrop<Rc<FileVersion>>, PhantomData<&'a Asked>);

impl std::ops::Deref for FileRef<'_> {
    type Target = Rc<FileVersion>;

    fn deref(&self) -> &Rc<FileVersion> {
        &self.0
    }
}

impl fmt::Debug for Asked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Asked").field("request", &self.request()).finish_non_exhaustive()
    }
}

/// The most bytes of a client's ERROR message kept for the record.
const MESSAGE_MAX: usize = 64;

/// The message of the last ERROR a client sent, kept until its transfer's record is written.
#[derive(Debug)]
pub(super) struct PeerMessage {
    len: Option<u8>,
    bytes: [u8; MESSAGE_MAX],
}

impl Default for PeerMessage {
    fn default() -> Self {
        Self { len: None, bytes: [0; MESSAGE_MAX] }
    }
}

impl PeerMessage {
    /// Keeps `message` (cut at [`MESSAGE_MAX`] bytes).
    pub(super) fn set(&mut self, message: &[u8]) {
        let n = message.len().min(MESSAGE_MAX);
        self.bytes[..n].copy_from_slice(&message[..n]);
        self.len = Some(n as u8);
    }

    /// Forgets it.
    pub(super) fn clear(&mut self) {
        self.len = None;
    }

    fn get(&self) -> Option<&[u8]> {
        self.len.map(|n| &self.bytes[..usize::from(n)])
    }
}

impl Engine {
    /// Ends transfer `idx` with `outcome`: out of the table and the wheel, its socket closed,
    /// and recorded.
    pub(super) fn finish<I: Io>(&mut self, idx: u32, outcome: Outcome, now: Timestamp, io: &mut I) {
        self.wheel.cancel(&mut self.table.links(), idx);
        let token = self.table.token(idx);
        let Some(t) = self.table.remove(idx) else { return };
        self.sources.count(t.client.ip(), false);
        if let Via::Transfer(sock) = t.route.via() {
            io.close_transfer(sock, token);
        }
        let port = t.route.port();
        self.tids.remember(&t.peer(), port, t.asked.request(), t.kind.started(), now);
        self.active -= 1;
        self.counters.set(Counter::Active, self.active as u64);
        let message = self.peer_message.get().filter(|_| outcome.by() == Some("client"));
        record(self.worker, &self.counters, &mut self.latencies, &t, outcome, message, now);
        self.peer_message.clear();
    }

    /// `request`, with `--log-requests`: a request as it arrives, before anything is decided.
    pub(super) fn log_request(&self, d: &Datagram<'_>, r: &Request<'_>) {
        if !self.policy.log_requests {
            return;
        }
        info!(
            worker = self.worker,
            client = %d.peer,
            local = d.local.map(|l| tracing::field::display(l.ip)),
            direction = direction(r),
            file = %Text(r.filename),
            mode = r.mode.as_str(),
            options = %AskedOptions(r.options),
            "request"
        );
    }

    /// `request refused` or `request ignored` for a request that becomes no transfer (`r`:
    /// the request, when the datagram decoded as one), folded with its repeats from the same
    /// client (see `fold.rs`).
    pub(super) fn record_no_transfer(
        &mut self,
        now: Timestamp,
        d: &Datagram<'_>,
        r: Option<&Request<'_>>,
        reason: Reason,
        code: Option<ErrorCode>,
    ) {
        let worker = self.worker;
        let file = r.map_or(&b""[..], |r| r.filename);
        // Counted before folding: the metrics see every refusal, the log its first of a kind.
        if let (Some(r), false) = (r, reason.is_ignored()) {
            self.counters.finish(request_direction(r), refusal_finish(reason));
        }
        if !self.fold.note(now, d.peer.ip(), reason, file, |f| log_folded(worker, f)) {
            return;
        }
        let local = d.local.map(|l| tracing::field::display(l.ip));
        let (direction, mode, options) = match r {
            Some(r) => {
                (Some(direction(r)), Some(r.mode.as_str()), Some(tracing::field::display(AskedOptions(r.options))))
            }
            None => (None, None, None),
        };
        if reason.is_ignored() {
            info!(worker, client = %d.peer, local, direction, file = %Text(file), mode, options, reason = reason.name(), "request ignored");
        } else {
            let code = code.map(|c| c.0);
            // The name as resolved, when something beside normalisation decided it.
            let decided = Some(self.decided).filter(Decided::is_some);
            let path = decided.map(|_| tracing::field::display(Text(&self.path[..self.resolved])));
            let lookup = decided.map(tracing::field::display);
            info!(worker, client = %d.peer, local, direction, file = %Text(file), mode, options, reason = reason.name(), code, path, lookup, "request refused");
        }
    }

    /// Reports the folding windows that have closed (on the housekeeping tick).
    pub(super) fn sweep_folded(&mut self, now: Timestamp) {
        let worker = self.worker;
        self.fold.sweep(now, |f| log_folded(worker, f));
    }

    /// Writes every fold still open, as the worker ends: no count is lost to a stop.
    pub(crate) fn flush_folded(&mut self) {
        self.sweep_folded(Timestamp::NEVER);
    }
}

/// `requests folded`: repeats of one outcome from one client.
fn log_folded(worker: usize, f: &Folded<'_>) {
    info!(
        worker,
        client = f.client.map(tracing::field::display),
        unattributed = f.client.is_none().then_some(true),
        outcome = f.reason.outcome(),
        reason = f.reason.name(),
        count = f.count,
        first_file = f.client.map(|_| tracing::field::display(Text(f.first_file))),
        last_file = f.client.map(|_| tracing::field::display(Text(f.last_file))),
        "requests folded"
    );
}

fn direction(r: &Request<'_>) -> &'static str {
    request_direction(r).label()
}

fn request_direction(r: &Request<'_>) -> Direction {
    match r.kind {
        crate::proto::wire::RequestKind::Read => Direction::Read,
        crate::proto::wire::RequestKind::Write => Direction::Write,
    }
}

/// How a refused request counts in the metrics: as its counter does (see `admit.rs`).
fn refusal_finish(reason: Reason) -> Finish {
    match reason {
        Reason::NotFound => Finish::NotFound,
        Reason::Busy => Finish::Busy,
        _ => Finish::Refused,
    }
}

/// Bytes from the network as text: UTF-8 as it is, any other byte as `\xNN` (the formatter
/// quotes and escapes the whole value).
pub(super) struct Text<'a>(pub(super) &'a [u8]);

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// A request's options as the client sent them: `name=value` pairs separated by spaces.
pub(super) struct AskedOptions<'a>(pub(super) Options<'a>);

impl fmt::Display for AskedOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, value)) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{}={}", Text(name), Text(value))?;
        }
        Ok(())
    }
}

/// A duration in milliseconds with three decimals (microsecond precision), never a float's
/// rounding noise.
pub(super) struct Millis(pub(super) Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0.as_micros();
        write!(f, "{}.{:03}", us / 1000, us % 1000)
    }
}

/// Counts finished transfer `t`, samples its duration when complete, and logs it
/// (`transfer finished`); `message` is the client's ERROR message when it ended the transfer.
fn record(
    worker: usize,
    c: &Counters,
    latencies: &mut Latencies,
    t: &Transfer,
    outcome: Outcome,
    message: Option<&[u8]>,
    now: Timestamp,
) {
    let bytes = t.kind.bytes();
    c.add(if matches!(t.kind, Kind::Write(_)) { Counter::Uploaded } else { Counter::Bytes }, bytes);
    c.add(Counter::Retransmits, u64::from(t.kind.retransmits()));
    c.add(outcome_counter(outcome), 1);
    let write = matches!(t.kind, Kind::Write(_));
    c.finish(if write { Direction::Write } else { Direction::Read }, outcome_finish(outcome));
    let elapsed = t.kind.completed().unwrap_or(now).saturating_since(t.kind.started());
    let request = match Packet::decode(t.asked.request()) {
        Ok(Packet::Request(r)) => Some(r),
        _ => None,
    };
    if outcome == Outcome::Complete {
        latencies.record_transfer(elapsed);
        let class = stats::file_classes().classify(request.map_or(&b""[..], |r| r.filename));
        c.record_duration(class, elapsed);
    }
    let g = &t.asked.granted();
    let (blksize, windowsize) = match g.has_oack() {
        true => (g.blksize, g.windowsize),
        false => (Negotiated::PLAIN.blksize, Negotiated::PLAIN.windowsize),
    };
    c.record_negotiated(blksize, windowsize);
    info!(
        worker,
        client = %t.peer(),
        local = t.asked.local().map(tracing::field::display),
        file = request.map(|r| tracing::field::display(Text(r.filename))),
        path = %t.name(),
        lookup = t.asked.lookup().map(tracing::field::display),
        direction = %t.kind.direction(),
        mode = %t.mode(),
        options = request.map(|r| tracing::field::display(AskedOptions(r.options))),
        blksize,
        windowsize,
        tsize = g.tsize,
        timeout = g.timeout,
        bytes,
        blocks = t.kind.blocks(),
        ms = %Millis(elapsed),
        retransmits = t.kind.retransmits(),
        outcome = outcome.label(),
        by = outcome.by(),
        code = outcome.code().map(|c| c.0),
        client_message = message.map(|m| tracing::field::display(Text(m))),
        "transfer finished"
    );
}

/// Samples the time from download `t`'s request to its client's first ACK, by file class, as
/// that ACK arrives (`now`): whatever the transfer's end, so slow starts show even when they fail.
pub(super) fn first_ack(c: &Counters, t: &Transfer, now: Timestamp) {
    let file = match Packet::decode(t.asked.request()) {
        Ok(Packet::Request(r)) => r.filename,
        _ => &b""[..],
    };
    c.record_first_ack(stats::file_classes().classify(file), now.saturating_since(t.kind.started()));
}

/// The counter a transfer that ended with `outcome` counts in.
fn outcome_counter(outcome: Outcome) -> Counter {
    match outcome {
        Outcome::Complete => Counter::Ok,
        Outcome::Probe => Counter::Probes,
        Outcome::Rejected(_) => Counter::Rejected,
        Outcome::TimedOut => Counter::Timeouts,
        Outcome::PeerError(_) | Outcome::Aborted(_) => Counter::Errors,
    }
}

/// How a transfer that ended with `outcome` counts in the metrics (its record's `outcome`).
fn outcome_finish(outcome: Outcome) -> Finish {
    match outcome {
        Outcome::Complete => Finish::Ok,
        Outcome::Probe => Finish::Probe,
        Outcome::Rejected(_) => Finish::Rejected,
        Outcome::PeerError(_) => Finish::ClientError,
        Outcome::Aborted(_) => Finish::Error,
        Outcome::TimedOut => Finish::Timeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_counts_once_where_reports_expect_it() {
        assert_eq!(outcome_counter(Outcome::Complete), Counter::Ok);
        assert_eq!(outcome_counter(Outcome::Probe), Counter::Probes);
        assert_eq!(outcome_counter(Outcome::TimedOut), Counter::Timeouts);
        assert_eq!(outcome_counter(Outcome::PeerError(ErrorCode::DISK_FULL)), Counter::Errors);
        assert_eq!(outcome_counter(Outcome::Aborted(ErrorCode::NOT_DEFINED)), Counter::Errors);
        assert_eq!(outcome_counter(Outcome::Rejected(ErrorCode::OPTION_REFUSED)), Counter::Rejected);
    }

    #[test]
    fn metrics_label_a_transfer_as_its_record_does() {
        for o in [
            Outcome::Complete,
            Outcome::Probe,
            Outcome::Rejected(ErrorCode::OPTION_REFUSED),
            Outcome::PeerError(ErrorCode::DISK_FULL),
            Outcome::Aborted(ErrorCode::NOT_DEFINED),
            Outcome::TimedOut,
        ] {
            assert_eq!(outcome_finish(o).label(), o.label());
        }
        assert_eq!(refusal_finish(Reason::NotFound), Finish::NotFound);
        assert_eq!(refusal_finish(Reason::Busy), Finish::Busy);
        assert_eq!(refusal_finish(Reason::Mode), Finish::Refused);
    }

    #[test]
    fn what_a_transfer_keeps_of_its_request_reads_back_as_it_was() {
        let request = b"\x00\x01f\x00octet\x00tsize\x000\x00";
        let raw = b"\x00\x01f\x00octet\x00tsize\x000\x00BlkSize\x001468\x00windowsize\x004\x00timeout\x003\x00";
        let Ok(Packet::Request(r)) = Packet::decode(raw) else { panic!() };
        let limits = crate::proto::Limits::default();
        let granted = crate::proto::negotiate(r.kind, r.mode, &r.options, Some(u64::MAX - 1), limits, None);
        let rule = Decided { rule: Some(u32::MAX), trimmed: true, prefix: false, view: true, case: true };
        let locals = [None, Some("192.0.2.7".parse().unwrap()), Some("2001:db8::7".parse().unwrap())];
        for (local, lookup) in locals.into_iter().zip([None, Some(rule), Some(Decided { rule: None, ..rule })]) {
            let tsize_only = match Packet::decode(request) {
                Ok(Packet::Request(r)) => crate::proto::negotiate(r.kind, r.mode, &r.options, Some(7), limits, None),
                _ => panic!(),
            };
            assert_eq!((tsize_only.tsize, tsize_only.timeout), (Some(7), None));
            for (req, g) in [(&raw[..], granted), (&request[..], Negotiated::PLAIN), (&request[..], tsize_only)] {
                let a = Asked::new(req, local, &g, lookup);
                assert_eq!((a.request(), a.local(), a.granted(), a.lookup()), (req, local, g, lookup));
            }
        }
        assert_eq!(Asked::new(b"", None, &Negotiated::PLAIN, None).request(), b"");
    }

    #[test]
    fn the_file_version_is_shared_with_the_request_and_given_back_with_its_last_holder() {
        let (v1, v2) = (Rc::new(FileVersion::zeros(8)), Rc::new(FileVersion::zeros(8)));
        let h = AskedHeader::new(None, &Negotiated::PLAIN, None);
        let req = b"\x00\x01f\x00octet\x00";
        let a = Asked::with_header(&h, req, Some(Rc::clone(&v1)));
        assert!(a.is(&h, req, Some(&v1)));
        assert!(!a.is(&h, req, Some(&v2)) && !a.is(&h, req, None), "another version is another request");
        assert!(Rc::ptr_eq(&a.file().unwrap(), &v1));
        assert_eq!(a.file_name(), Some(v1.name()));
        let b = a.clone();
        // Borrowing the version takes no reference; holders share the one the request keeps.
        let kept: Rc<FileVersion> = Rc::clone(&b.file().unwrap());
        assert_eq!(Rc::strong_count(&v1), 3);
        drop(kept);
        drop(a);
        assert_eq!(Rc::strong_count(&v1), 2);
        drop(b);
        assert_eq!(Rc::strong_count(&v1), 1);
        let upload = Asked::with_header(&h, req, None);
        assert!(upload.file().is_none() && upload.file_name().is_none());
        assert!(upload.is(&h, req, None));
    }

    #[test]
    fn milliseconds_have_three_decimals() {
        assert_eq!(Millis(Duration::from_micros(5251)).to_string(), "5.251");
        assert_eq!(Millis(Duration::from_micros(12)).to_string(), "0.012");
        assert_eq!(Millis(Duration::from_secs(2)).to_string(), "2000.000");
    }

    #[test]
    fn client_bytes_read_as_text() {
        assert_eq!(Text(b"a b\xff").to_string(), "a b\\xff");
        let raw = b"\x00\x01f\x00octet\x00tsize\x000\x00BlkSize\x001468\x00";
        let Ok(Packet::Request(r)) = Packet::decode(raw) else { panic!() };
        assert_eq!(AskedOptions(r.options).to_string(), "tsize=0 BlkSize=1468");
    }
}
