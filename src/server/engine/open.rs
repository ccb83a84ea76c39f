//! From an admitted request to a transfer: the file opened (through [`Resolve`](super::resolve::Resolve)
//! and the file cache) or the upload begun, the options negotiated against it and the interface,
//! and the transfer given a slot and a socket.

use std::rc::Rc;

use tracing::warn;

use super::admit::{Admission, Refusal};
use super::host;
use super::kind::{Kind, WriteState};
use super::lookup::{self, Unserved};
use super::peer::Peer;
use super::record::{AskedHeader, Text};
use super::resolve::{Decided, Lookup, Refused};
use super::table::{NO_LOCAL, Route, Transfer};
use super::{Engine, transfer_bind_addr};
use crate::fs::FileVersion;
use crate::fs::{OpenError, PathError, UploadError};
use crate::proto::options::{Limits, Negotiated, blksize_for_mtu, negotiate};
use crate::proto::wire::{Mode, Packet, Request, RequestKind};
use crate::proto::{LocalFailure, ReadTransfer, Timestamp, WriteTransfer, sender};
use crate::server::io::{Datagram, Io, MAX_UPLOAD_BLKSIZE};
use crate::server::socket::LocalEnd;
use crate::server::stats::Counter;

/// A request made ready to become a transfer.
pub(super) struct Prepared {
    pub(super) kind: Kind,
    /// Its options as negotiated, for its record.
    pub(super) granted: Negotiated,
    /// The file version a read serves (kept with its request: see `Asked::file`).
    pub(super) file: Option<Rc<FileVersion>>,
}

impl Engine {
    /// The transfer state of request `r`: its file opened or its upload begun, and its options
    /// negotiated. The caller answers and records a refusal.
    pub(super) fn prepare(&mut self, now: Timestamp, d: &Datagram<'_>, r: &Request<'_>) -> Result<Prepared, Admission> {
        self.decided = Decided::default();
        self.resolved = 0;
        match r.kind {
            RequestKind::Read => self.prepare_read(now, d, r),
            RequestKind::Write => self.prepare_write(now, d, r),
        }
    }

    fn prepare_read(&mut self, now: Timestamp, d: &Datagram<'_>, r: &Request<'_>) -> Result<Prepared, Admission> {
        let lookup = Lookup { filename: r.filename, peer: d.peer, local: d.local, write: false };
        let (file, _) = match self.find_file(&lookup, now) {
            Ok(found) => found,
            Err(Unserved::Rule(message)) => return Err(self.refuse_by_rule(message)),
            Err(Unserved::Open(e)) => {
                if let OpenError::Io(err) = &e {
                    // The OS error is for the operator; the `request refused` record follows.
                    warn!(worker = self.worker, client = %d.peer, file = %Text(r.filename), error = %err, "cannot open file");
                }
                return Err(Admission::refuse(refusal_of(&e)));
            }
        };
        let netascii = r.mode == Mode::Netascii;
        let size = match netascii {
            true => file.netascii_len().map_err(|e| Admission::Refuse {
                refusal: Refusal::File(LocalFailure::from(e)),
                counter: Counter::Refused,
            })?,
            false => file.len(),
        };
        if size > sender::MAX_SIZE {
            // Past what a transfer counts (and past the address space of most systems, so the
            // file could not be mapped): refused rather than cut short.
            warn!(worker = self.worker, client = %d.peer, file = %Text(r.filename), size, "file too large to serve");
            return Err(Admission::refuse(Refusal::File(LocalFailure::ReadFailed)));
        }
        let neg = self.negotiate(r, Some(size), d.local, now);
        let mut xfer = ReadTransfer::new(now, size, &neg, self.retransmits.in_force());
        if let Some(bytes) = self.policy.limits.max_window_bytes {
            xfer.limit_blind_sends(bytes);
        }
        Ok(Prepared { kind: Kind::Read { xfer }, granted: neg, file: Some(file) })
    }

    fn prepare_write(&mut self, now: Timestamp, d: &Datagram<'_>, r: &Request<'_>) -> Result<Prepared, Admission> {
        // Uploads are on when the worker was given their directory (admission checked).
        let Some(uploads) = self.uploads.clone() else { return Err(Admission::refuse(Refusal::WritesDisabled)) };
        let policy = self.policy.upload;
        let neg = self.negotiate(r, None, d.local, now);
        let netascii = r.mode == Mode::Netascii;
        let lookup = Lookup { filename: r.filename, peer: d.peer, local: d.local, write: true };
        // Writes are resolved as reads are, but never go to a client's view or a name found
        // with case ignored: an upload lands where its name says.
        let files = &self.files;
        let mut decided = Decided::default();
        let resolved = self.resolver.resolve(
            &lookup,
            &self.policy.lookup,
            &mut |rel| files.is_servable(rel),
            &mut decided,
            &mut self.path,
        );
        lookup::count(&self.counters, &decided);
        self.decided = decided;
        let started = match resolved {
            Err(Refused::Rule { message, .. }) => {
                self.counters.add(Counter::NamesDenied, 1);
                return Err(self.refuse_by_rule(message));
            }
            Err(Refused::Path(PathError::Empty)) => Err(UploadError::NotFound),
            Err(Refused::Path(_)) => Err(UploadError::Denied),
            Ok(rel) => {
                self.resolved = rel.len();
                uploads.begin(rel, &policy, neg.tsize, netascii).map(|u| (u, String::from_utf8_lossy(rel)))
            }
        };
        match started {
            Ok((upload, name)) => {
                let xfer = WriteTransfer::new(now, &neg, policy.max_size, self.retransmits.in_force());
                let state = WriteState { xfer, upload: Some(upload), name: name.into() };
                Ok(Prepared { kind: Kind::Write(Box::new(state)), granted: neg, file: None })
            }
            Err(e) => {
                // Every upload refusal counts as refused, a missing directory too.
                Err(Admission::Refuse { refusal: Refusal::File(LocalFailure::from(&e)), counter: Counter::Refused })
            }
        }
    }

    /// Gives transfer `kind` of datagram `d` a slot and, unless serving from the listening
    /// port, its own socket; returns its slot, or `None` when no slot is free or no socket could
    /// be opened (the request is then answered "busy").
    pub(super) fn start<I: Io>(
        &mut self,
        now: Timestamp,
        listen: u32,
        d: &Datagram<'_>,
        prepared: Prepared,
        io: &mut I,
    ) -> Option<u32> {
        let idx = self.table.reserve()?;
        let token = self.table.token(idx);
        let netascii = matches!(Packet::decode(d.payload), Ok(Packet::Request(r)) if r.mode == Mode::Netascii);
        let retransmit = self.retransmits.current();
        let route = if self.settings.single_port {
            Route::listen(listen, self.intern_local(d.local), retransmit, netascii)
        } else {
            // Never the port of the client's previous transfer (see `tids.rs`).
            let avoid = self.tids.last(&d.peer);
            match io.open_transfer(transfer_bind_addr(&d.peer, d.local), avoid, token) {
                Ok((sock, port)) => Route::socket(sock, port, retransmit, netascii),
                Err(e) => {
                    self.table.release(idx);
                    self.open_failed = Some(now);
                    warn!(worker = self.worker, error = %e, "cannot open a transfer socket");
                    return None;
                }
            }
        };
        let lookup = Some(self.decided).filter(Decided::is_some);
        let Prepared { kind, granted, file } = prepared;
        let asked = self.table.asked(&AskedHeader::new(d.local.map(|l| l.ip), &granted, lookup), d.payload, file);
        self.table.insert(idx, Transfer { client: Peer::new(d.peer), route, kind, asked });
        self.active += 1;
        self.counters.set(Counter::Active, self.active as u64);
        self.sources.count(d.peer.ip(), true);
        Some(idx)
    }

    /// Negotiates a request's options. `size` is the file's size for a read; uploads are also
    /// capped at the blksize a receive buffer holds.
    fn negotiate(&mut self, r: &Request<'_>, size: Option<u64>, local: Option<LocalEnd>, now: Timestamp) -> Negotiated {
        let mtu = local.and_then(|l| {
            let mtu = self.host.interface_mtu(l.ifindex, now)?;
            Some(blksize_for_mtu(mtu, l.ip.is_ipv6()))
        });
        let mut limits = self.policy.limits;
        if r.kind == RequestKind::Write {
            limits = Limits { max_blksize: limits.max_blksize.min(MAX_UPLOAD_BLKSIZE), ..limits };
        }
        let file_size = size.filter(|_| r.mode == Mode::Octet);
        negotiate(r.kind, r.mode, &r.options, file_size, limits, mtu)
    }

    /// Whether a request sent to `ip` was sent to a broadcast address.
    pub(super) fn is_broadcast(&mut self, ip: std::net::IpAddr, now: Timestamp) -> bool {
        host::is_broadcast(self.host.as_mut(), ip, now)
    }

    fn intern_local(&mut self, local: Option<LocalEnd>) -> u16 {
        let Some(l) = local else { return NO_LOCAL };
        if let Some(i) = self.locals.iter().position(|x| *x == l) {
            return i as u16;
        }
        if self.locals.len() >= usize::from(NO_LOCAL) {
            return NO_LOCAL;
        }
        self.locals.push(l);
        (self.locals.len() - 1) as u16
    }
}

impl Engine {
    /// The refusal of a request a map file rule refused: ERROR 2, with the rule's message
    /// when it has one (kept for the reply, see [`Engine::on_request`]).
    fn refuse_by_rule(&mut self, message: Option<String>) -> Admission {
        self.rule_message = message;
        Admission::refuse(Refusal::File(LocalFailure::Denied))
    }
}

/// The refusal that answers a file that could not be opened.
fn refusal_of(e: &OpenError) -> Refusal {
    match e {
        OpenError::NotWorldReadable => Refusal::NotWorldReadable,
        _ => Refusal::File(LocalFailure::from(e)),
    }
}
