//! Transmits: what a step's client state machine wants sent (requests, ACKs, errors, upload
//! DATA) is encoded into the scratch buffer and queued as a send; an ACK may be held back
//! (`--hold`); then the client's next deadline is armed, or the step finished.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use bootstorm::proto::wire::{self, Mode};
use bootstorm::proto::{ClientTransmit, Timestamp, UploadTransmit};

use super::Driver;
use super::client::StepClient;
use crate::plan::Step;

impl Driver<'_> {
    /// Sends what the step's client wants sent, and arms its timer.
    pub(super) fn pump(&mut self, idx: u32, now: Timestamp) {
        let cfg = self.plan.client;
        let hold = self.plan.hold;
        let fd = self.clients.0[idx as usize].sock.as_raw_fd();
        loop {
            let global = self.clients.0[idx as usize].global;
            let Some(sess) = self.clients.0[idx as usize].session.as_mut() else { return };
            let Some(run) = sess.run.as_mut() else { return };
            let number = sess.number;
            let t = match &mut run.client {
                StepClient::Read(c) => c.poll_transmit(now, &cfg),
                StepClient::Write(c) => {
                    let Some(t) = c.poll_transmit(now) else { break };
                    let Step::Fetch(f) = run.step else { break };
                    let file = self.plan.files[f].expect.clone().unwrap_or_else(|| Arc::from(&[][..]));
                    match t {
                        UploadTransmit::Request => {
                            let name = format!("{}.{global}", self.plan.files[f].name);
                            let n = c.encode_request(name.as_bytes(), Mode::Octet, &mut self.scratch).unwrap_or(0);
                            let (server, bytes) = (self.plan.server, self.scratch);
                            self.send(fd, server, &bytes[..n]);
                        }
                        UploadTransmit::Data { block, offset, len } => {
                            let Some(tid) = run.tid else { continue };
                            self.send_with(fd, tid, &wire::data_header(block), Some((&file, offset as usize, len)));
                        }
                        UploadTransmit::Error { code, message } => {
                            let Some(tid) = run.tid else { continue };
                            let n = wire::encode_error(code, message.as_bytes(), &mut self.scratch).unwrap_or(0);
                            let bytes = self.scratch;
                            self.send(fd, tid, &bytes[..n]);
                        }
                    }
                    continue;
                }
            };
            let Some(t) = t else { break };
            let StepClient::Read(client) = &run.client else { break };
            match t {
                ClientTransmit::Request => {
                    let name_buf;
                    let name: &[u8] = match run.step {
                        Step::Miss(n) => {
                            name_buf = self.plan.miss_name(number, n);
                            name_buf.as_bytes()
                        }
                        Step::Probe(f) | Step::Fetch(f) => self.plan.files[f].name.as_bytes(),
                    };
                    let n = client.encode_request(name, Mode::Octet, &mut self.scratch).unwrap_or(0);
                    let (server, bytes) = (self.plan.server, self.scratch);
                    self.send(fd, server, &bytes[..n]);
                }
                ClientTransmit::Ack(b) => {
                    let Some(tid) = run.tid else { continue };
                    if hold.is_zero() {
                        self.send(fd, tid, &wire::ack(b));
                    } else {
                        run.held = Some((b, now + hold));
                    }
                }
                ClientTransmit::Error { code, message } => {
                    let Some(tid) = run.tid else { continue };
                    let n = wire::encode_error(code, message.as_bytes(), &mut self.scratch).unwrap_or(0);
                    let bytes = self.scratch;
                    self.send(fd, tid, &bytes[..n]);
                }
            }
        }
        let Some(run) = self.clients.0[idx as usize].session.as_ref().and_then(|s| s.run.as_ref()) else { return };
        // A held final ACK is still sent (when its time comes) before the step ends.
        if let Some(o) = run.client.outcome()
            && run.held.is_none()
        {
            self.finish_step(idx, Ok(o), now);
            return;
        }
        let deadline = match (run.client.poll_timeout(), run.held) {
            (Some(a), Some((_, b))) => Some(a.min(b)),
            (a, b) => a.or(b.map(|(_, t)| t)),
        };
        if let Some(d) = deadline {
            self.wheel.arm(&mut self.clients, idx, d);
        }
    }
}
