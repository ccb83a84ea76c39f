//! What leaves for the backend: a transfer's first answer, DATA gathered into runs (one send
//! each, for GSO), and the ERRORs that answer no transfer.

use std::net::SocketAddr;
use std::rc::Rc;

use super::Engine;
use super::admit::Refusal;
use super::kind::Kind;
use super::table::Transfer;
use crate::fs::FileVersion;
use crate::proto::wire::{self, Options};
use crate::proto::{ErrorCode, Negotiated, RetransmitConfig, Timestamp, Transmit, WriteTransmit};
use crate::server::io::{Body, DataRun, Io, MAX_HEAD, MAX_RUN, MAX_RUN_BYTES, Outgoing, Segment, Token, Via};
use crate::server::socket::LocalEnd;

// Every ERROR fits the head: `wire::encode_error` shortens a message to the room there is and
// fails only below an empty message's five bytes.
const _: () = assert!(MAX_HEAD > wire::HEADER_LEN + 1);

impl Engine {
    /// Sends transfer `idx`'s first answer (OACK, DATA 1 or ACK 0): at once for a new transfer or
    /// a repeated request, whose options (`requested`) give the OACK the client's spelling.
    pub(super) fn send_first<I: Io>(&mut self, idx: u32, now: Timestamp, requested: &Options<'_>, io: &mut I) {
        let token = self.table.token(idx);
        let Some(t) = self.table.get_mut(idx) else { return };
        let retransmit = self.retransmits.get(t.route.retransmit());
        let from = local_end(&self.locals, t.route.local());
        match &mut t.kind {
            Kind::Read { xfer, .. } => {
                // A first DATA waits for room like any DATA: the transfer is queued by
                // `after_event` and `flush` sends it. An OACK, which has the request at hand
                // only now, goes out at once.
                if !xfer.oack().has_oack() && !io.can_send() {
                    return;
                }
                if let Some(tx) = xfer.poll_transmit(now, retransmit) {
                    transmit_read(t, tx, Some(requested), token, from, &mut self.head, io);
                }
            }
            Kind::Write(w) => {
                if let Some(tx) = w.xfer.poll_transmit() {
                    transmit_write(
                        t.route.via(),
                        t.client.addr(),
                        from,
                        tx,
                        Some(requested),
                        token,
                        &mut self.head,
                        io,
                    );
                }
            }
        }
    }

    /// Sends the ERROR of a refusal, which belongs to no transfer.
    pub(super) fn refuse<I: Io>(&mut self, io: &mut I, via: Via, to: SocketAddr, from: Option<LocalEnd>, r: Refusal) {
        self.reply(io, via, to, from, r.code(), r.message());
    }

    /// Sends an ERROR that belongs to no transfer.
    pub(super) fn reply<I: Io>(
        &mut self,
        io: &mut I,
        via: Via,
        to: SocketAddr,
        from: Option<LocalEnd>,
        code: ErrorCode,
        msg: &str,
    ) {
        let n = wire::encode_error(code, msg.as_bytes(), &mut self.head).unwrap_or(0);
        io.send(Outgoing { via, to, from, head: &self.head[..n], body: None, token: None });
    }
}

/// Writes an OACK: in the spelling and order of the request's options when it is at hand, else
/// from what the transfer kept. An OACK of a request this server accepted always fits
/// [`MAX_HEAD`].
fn encode_oack(neg: &Negotiated, requested: Option<&Options<'_>>, head: &mut [u8; MAX_HEAD]) -> usize {
    match requested {
        Some(options) => neg.encode_oack(options, head),
        None => neg.encode_oack_again(head),
    }
    .unwrap_or(0)
}

/// Gathers what read transfer `t` has to send into DATA runs and hands each to the backend as
/// one send; an ERROR goes after the run before it. Returns whether anything was sent.
#[allow(clippy::too_many_arguments)]
pub(super) fn transmit_read_run<I: Io>(
    t: &mut Transfer,
    now: Timestamp,
    retransmit: &RetransmitConfig,
    token: Token,
    from: Option<LocalEnd>,
    head: &mut [u8; MAX_HEAD],
    run: &mut Vec<Segment>,
    io: &mut I,
) -> bool {
    let (via, to, netascii) = (t.route.via(), t.client.addr(), t.route.netascii());
    let (Kind::Read { xfer }, Some(file)) = (&mut t.kind, t.asked.file()) else { return false };
    let file: &Rc<FileVersion> = &file;
    run.clear();
    // netascii blocks are translated into scratch: the run's all lie in this chunk, which its
    // send keeps alive instead of the file.
    let mut text = None;
    let mut sent = false;
    loop {
        // A short DATA ends the transfer's data, and a run holds what one send may carry.
        if let Some(first) = run.first() {
            let seg = 4 + first.slice.len;
            let last_short = run.last().is_some_and(|l| l.slice.len < first.slice.len);
            if last_short || run.len() == MAX_RUN || (run.len() + 1) * seg > MAX_RUN_BYTES {
                break;
            }
        }
        let Some(tx) = xfer.poll_transmit(now, retransmit) else { break };
        match tx {
            Transmit::Data { block, offset, len } => {
                let slice = if netascii {
                    match file.netascii_block(offset, len) {
                        Ok(Some((chunk, slice))) => {
                            if text.as_ref().is_some_and(|c| !Rc::ptr_eq(c, &chunk)) && !run.is_empty() {
                                io.send_run(DataRun {
                                    via,
                                    to,
                                    from,
                                    file: text.as_ref().unwrap_or(file),
                                    segs: run,
                                    token,
                                });
                                run.clear();
                                sent = true;
                            }
                            text = Some(chunk);
                            Some(slice)
                        }
                        // No scratch free: not sent now, like a datagram lost on the way.
                        Ok(None) => continue,
                        Err(_) => None,
                    }
                } else {
                    file.raw_slice(offset, len)
                };
                let Some(slice) = slice else {
                    // The file shrank under the mapping: what was gathered is not sent.
                    run.clear();
                    xfer.fail(crate::proto::LocalFailure::FileChanged);
                    continue;
                };
                if run.first().is_some_and(|f| slice.len > f.slice.len) {
                    io.send_run(DataRun { via, to, from, file: text.as_ref().unwrap_or(file), segs: run, token });
                    run.clear();
                    sent = true;
                }
                run.push(Segment { hdr: wire::data_header(block), slice });
            }
            Transmit::Error { code, message } => {
                if !run.is_empty() {
                    io.send_run(DataRun { via, to, from, file: text.as_ref().unwrap_or(file), segs: run, token });
                    run.clear();
                }
                let n = wire::encode_error(code, message.as_bytes(), head).unwrap_or(0);
                io.send(Outgoing { via, to, from, head: &head[..n], body: None, token: None });
                return true;
            }
            // The first answer sent again on its timer, without the request.
            Transmit::Oack(neg) => {
                let n = encode_oack(&neg, None, head);
                io.send(Outgoing { via, to, from, head: &head[..n], body: None, token: Some(token) });
                sent = true;
            }
        }
    }
    if !run.is_empty() {
        io.send_run(DataRun { via, to, from, file: text.as_ref().unwrap_or(file), segs: run, token });
        run.clear();
        sent = true;
    }
    sent
}

/// Encodes and hands one transmit of read transfer `t` to the backend; an OACK in the spelling
/// of `requested` when given.
fn transmit_read<I: Io>(
    t: &mut Transfer,
    tx: Transmit,
    requested: Option<&Options<'_>>,
    token: Token,
    from: Option<LocalEnd>,
    head: &mut [u8; MAX_HEAD],
    io: &mut I,
) {
    let (via, to, netascii) = (t.route.via(), t.client.addr(), t.route.netascii());
    let (Kind::Read { xfer }, Some(file)) = (&mut t.kind, t.asked.file()) else { return };
    let file: &Rc<FileVersion> = &file;
    match tx {
        Transmit::Data { block, offset, len } => {
            // netascii: translated into a chunk of scratch, which the send keeps alive.
            let (text, slice) = match netascii {
                true => match file.netascii_block(offset, len) {
                    Ok(Some((chunk, slice))) => (Some(chunk), Some(slice)),
                    Ok(None) => return, // no scratch free: resent on the timer
                    Err(_) => (None, None),
                },
                false => (None, file.raw_slice(offset, len)),
            };
            let Some(slice) = slice else {
                xfer.fail(crate::proto::LocalFailure::FileChanged);
                return;
            };
            let hdr = wire::data_header(block);
            let body = Some(Body { file: text.as_ref().unwrap_or(file), slice });
            io.send(Outgoing { via, to, from, head: &hdr, body, token: Some(token) });
        }
        Transmit::Error { code, message } => {
            let n = wire::encode_error(code, message.as_bytes(), head).unwrap_or(0);
            io.send(Outgoing { via, to, from, head: &head[..n], body: None, token: None });
        }
        Transmit::Oack(neg) => {
            let n = encode_oack(&neg, requested, head);
            io.send(Outgoing { via, to, from, head: &head[..n], body: None, token: Some(token) });
        }
    }
}

/// Encodes and hands one transmit of a write transfer (OACK, ACK or ERROR: control packets) to
/// the backend; an OACK in the spelling of `requested` when given.
#[allow(clippy::too_many_arguments)]
pub(super) fn transmit_write<I: Io>(
    via: Via,
    to: SocketAddr,
    from: Option<LocalEnd>,
    tx: WriteTransmit,
    requested: Option<&Options<'_>>,
    token: Token,
    head: &mut [u8; MAX_HEAD],
    io: &mut I,
) {
    let (n, token) = match tx {
        WriteTransmit::Ack(b) => {
            head[..4].copy_from_slice(&wire::ack(b));
            (4, None)
        }
        WriteTransmit::Error { code, message } => {
            (wire::encode_error(code, message.as_bytes(), head).unwrap_or(0), None)
        }
        WriteTransmit::Oack(neg) => (encode_oack(&neg, requested, head), Some(token)),
    };
    io.send(Outgoing { via, to, from, head: &head[..n], body: None, token });
}

/// The local address of index `idx` in the engine's `locals`, if any.
pub(super) fn local_end(locals: &[LocalEnd], idx: u16) -> Option<LocalEnd> {
    locals.get(usize::from(idx)).copied()
}
