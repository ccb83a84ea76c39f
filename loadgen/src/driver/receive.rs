//! Receives: a received buffer is parsed (sender, payload, GRO segment size), split into its
//! datagrams, and each datagram from the step's server is decoded and given to the step's
//! client state machine, after the checks a real client would make (transfer ID) and the ones
//! a load generator adds (UEFI size probe, deliberate drops, byte verification).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use bootstorm::net::decode_sockaddr;
use bootstorm::proto::wire::{self, Packet};
use bootstorm::proto::{ClientOutcome, ErrorCode, Timestamp};
use bootstorm::sys::cmsg::gro_segment;
use io_uring::types;

use super::Driver;
use super::client::StepClient;
use super::session::{Failure, WrongAnswer};
use crate::plan::Step;

impl Driver<'_> {
    /// Handles `buf`, what client `idx`'s multishot receive wrote: drops it if its sender is
    /// unreadable or its payload was truncated, else hands each datagram in it (several when
    /// GRO coalesced a GSO send) to [`on_datagram`](Self::on_datagram).
    pub(super) fn on_recv_buffer(&mut self, idx: u32, buf: &[u8], now: Timestamp) {
        let Ok(out) = types::RecvMsgOut::parse(buf, &self.msg) else { return };
        let name = out.name_data();
        let name = &name[..name.len().min(out.incoming_name_len() as usize)];
        if let Some(from) = decode_sockaddr(name)
            && !out.is_payload_truncated()
        {
            let payload = out.payload_data();
            match gro_segment(out.control_data()) {
                Some(seg) => {
                    for d in payload.chunks(seg) {
                        self.on_datagram(idx, from, d, now);
                    }
                }
                None => self.on_datagram(idx, from, payload, now),
            }
        }
    }

    /// Handles one datagram `payload` from `from` to client `idx`. The first answer to a
    /// request, from the server's address, sets the transfer ID; datagrams from another source
    /// are strays (counted, else ignored, as RFC 1350 says, and as firmware takes answers only
    /// from the address it asked). Before the first answer, a packet that provably belongs to
    /// another transfer and that no client would take for an answer (a DATA other than block 1
    /// to a read) is stale: counted and ignored, as an RFC 1350 client ignores a block it does
    /// not expect. An ERROR 5 as the first answer, or DATA whose bytes differ from the file's,
    /// is a wrong answer: counted, and the step fails.
    fn on_datagram(&mut self, idx: u32, from: SocketAddr, payload: &[u8], now: Timestamp) {
        let cfg = self.plan.client;
        let client = &mut self.clients.0[idx as usize];
        let fd = client.sock.as_raw_fd();
        let from_previous = client.previous_tid == Some(from);
        let Some(run) = client.session.as_mut().and_then(|s| s.run.as_mut()) else {
            self.stats.stray += 1;
            return;
        };
        let first = run.tid.is_none();
        if first && from.ip() != self.plan.server.ip() {
            self.stats.stray += 1;
            return;
        }
        let write = self.plan.upload && matches!(run.step, Step::Fetch(_));
        if first && Packet::decode(payload).is_ok_and(|p| is_stale(&p, write)) {
            self.stats.stale(from_previous);
            return;
        }
        let tid = *run.tid.get_or_insert(from);
        if from != tid {
            self.stats.stray += 1;
            return;
        }
        let Ok(p) = Packet::decode(payload) else { return };
        if first && matches!(p, Packet::Error { code: ErrorCode::UNKNOWN_TID, .. }) {
            // No request is answered so: the answer to a packet of another transfer.
            self.stats.wrong_answer(from_previous);
            self.finish_step(idx, Err(Failure::WrongAnswer(WrongAnswer::UnknownTid)), now);
            return;
        }
        match (run.step, p) {
            (Step::Probe(_), Packet::Oack(_) | Packet::Data { .. }) => {
                // EDK2 reads the size from the OACK and aborts.
                let n = wire::encode_error(ErrorCode::OPTION_REFUSED, b"User aborted the transfer", &mut self.scratch)
                    .unwrap_or(0);
                let bytes = self.scratch;
                self.send(fd, tid, &bytes[..n]);
                self.finish_step(idx, Ok(ClientOutcome::Complete), now);
                return;
            }
            (_, Packet::Data { .. }) if self.plan.drop > 0.0 && self.rng.f64() < self.plan.drop => {
                self.stats.dropped += 1;
                return;
            }
            _ => {}
        }
        let client = match &mut run.client {
            StepClient::Read(c) => c,
            StepClient::Write(c) => {
                c.handle_packet(now, &p);
                self.pump(idx, now);
                return;
            }
        };
        let delivered = client.handle_packet(now, &p, &cfg);
        if let (Some((offset, data)), Step::Fetch(f)) = (delivered, run.step) {
            if let Some(expect) = &self.plan.files[f].expect {
                let end = offset as usize + data.len();
                if expect.get(offset as usize..end) != Some(data) {
                    self.stats.wrong_answer(from_previous);
                    self.finish_step(idx, Err(Failure::WrongData), now);
                    return;
                }
            }
            run.received += data.len() as u64;
        }
        self.pump(idx, now);
    }
}

/// Whether `p`, arriving before the first answer to a request (a write request if `write`),
/// is a late packet of another transfer that no client takes for the answer: a DATA other than
/// block 1 to a read (a server that ignores the options starts at block 1, one that takes them
/// sends an OACK first); a DATA, or an ACK other than ACK 0, to a write.
fn is_stale(p: &Packet<'_>, write: bool) -> bool {
    match *p {
        Packet::Data { block, .. } => write || block != 1,
        Packet::Ack { block } => write && block != 0,
        _ => false,
    }
}
