//! Engine tests against an in-memory backend: every request and error path, no sockets.
//! (Long on purpose: one short test per path, all on one rig; the tests of the records the
//! engine writes are in `tests/records.rs`.)

use std::net::SocketAddr;

use super::*;
use crate::config::{Cidr, ServerConfig, SourceRate, WriteConfig};
use crate::fs::UploadRoot;
use crate::proto::ReadTransfer;
use crate::server::io::{MAX_RUN_BYTES, SockRef};

use super::table::Slot;

use super::fake_io::{FakeIo, Run};

struct Rig {
    dir: tempfile::TempDir,
    engine: Engine,
    io: FakeIo,
    now: Timestamp,
    counters: Arc<CachePadded<Counters>>,
    /// The commit thread's ends, driven by the test.
    commit_jobs: Option<crossbeam_channel::Receiver<super::super::commit::CommitJob>>,
    commit_done: Option<crossbeam_channel::Sender<super::super::commit::CommitDone>>,
}

const CLIENT: &str = "192.0.2.10:2000";
const LOCAL: &str = "192.0.2.1";

/// An engine as `Server::start` builds it, serving a temporary root that holds `small` (1000
/// bytes) and `text`, from the default configuration changed by `set`.
fn rig(set: impl FnOnce(&mut ServerConfig)) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("small"), vec![7u8; 1000]).unwrap();
    std::fs::write(dir.path().join("text"), b"a\nb").unwrap();
    let mut cfg = ServerConfig { root: dir.path().to_path_buf(), ..Default::default() };
    set(&mut cfg);
    cfg.validate().unwrap();
    let root = Arc::new(Root::open(&cfg.root, cfg.follow_symlinks).unwrap());
    let counters = Arc::new(CachePadded::new(Counters::default()));
    let uploads = cfg.upload_dir().map(|d| Arc::new(UploadRoot::open(d).unwrap()));
    let (mut commit_jobs, mut commit_done, mut commits) = (None, None, None);
    if uploads.is_some() {
        let (jtx, jrx) = crossbeam_channel::unbounded();
        let (dtx, drx) = crossbeam_channel::unbounded();
        commit_jobs = Some(jrx);
        commit_done = Some(dtx);
        commits = Some(super::super::commit::CommitLink { jobs: jtx, done: drx });
    }
    let capacity = cfg.io.max_transfers;
    let parts = EngineParts { root, uploads, commits, counters: Arc::clone(&counters), capacity };
    let engine = Engine::new(0, Arc::new(cfg.effective_policy()), EngineSettings::of(&cfg), parts, Timestamp::ZERO);
    Rig { dir, engine, io: FakeIo::default(), now: Timestamp::ZERO, counters, commit_jobs, commit_done }
}

/// A change to the rig's configuration.
type Change = fn(&mut ServerConfig);

/// Uploads accepted into the root (the rig's only directory), on purpose: new files when
/// `create`, replacing files (served ones included) when `overwrite`.
fn uploads_in_root(c: &mut ServerConfig, create: bool, overwrite: bool) {
    c.write = Some(WriteConfig {
        dir: None,
        in_served_tree: true,
        overwrite_served_files: overwrite,
        allow_single_port: false,
    });
    c.serve.upload.create = create;
    c.serve.upload.overwrite = overwrite;
}

impl Rig {
    fn dgram(&mut self, via: Via, token: Option<Token>, peer: &str, payload: &[u8]) {
        let arrived = matches!(via, Via::Listen(_)).then_some(self.now);
        self.dgram_arrived(via, token, peer, payload, arrived);
    }

    /// A datagram the kernel received at `arrived` (a listening socket's), read now.
    fn dgram_arrived(
        &mut self,
        via: Via,
        token: Option<Token>,
        peer: &str,
        payload: &[u8],
        arrived: Option<Timestamp>,
    ) {
        let local = LocalEnd { ip: LOCAL.parse().unwrap(), ifindex: 0 };
        let d = Datagram {
            via,
            slot: token.map(Token::slot),
            peer: peer.parse().unwrap(),
            local: matches!(via, Via::Listen(_)).then_some(local),
            arrived,
            payload,
            truncated: false,
        };
        self.engine.on_datagram(self.now, &d, &mut self.io);
        self.engine.flush(self.now, &mut self.io);
        self.engine.answers_sent(self.now, self.now);
    }

    fn request(&mut self, peer: &str, payload: &[u8]) {
        self.dgram(Via::Listen(0), None, peer, payload);
    }

    /// An ACK from the client to transfer slot 0.
    fn ack(&mut self, peer: &str, block: u16) {
        let token = self.engine.token(0);
        // The socket of the transfer in slot 0.
        let held = self.engine.table.get(0).map(|t| t.route.via());
        let via =
            if self.engine.settings.single_port { Via::Listen(0) } else { held.unwrap_or(Via::Transfer(SockRef(0))) };
        let tok = (!self.engine.settings.single_port).then_some(token);
        self.dgram(via, tok, peer, &wire::ack(block));
    }

    /// Does what the commit thread does, for every job queued; returns how many.
    fn run_commits(&mut self) -> usize {
        let mut n = 0;
        while let Ok(job) = self.commit_jobs.as_ref().unwrap().try_recv() {
            let result = job.upload.commit();
            self.commit_done
                .as_ref()
                .unwrap()
                .send(super::super::commit::CommitDone { token: job.token, result })
                .unwrap();
            n += 1;
        }
        self.engine.on_timers(self.now, &mut self.io);
        self.engine.flush(self.now, &mut self.io);
        n
    }

    fn data(&mut self, peer: &str, block: u16, payload: &[u8]) {
        let mut p = wire::data_header(block).to_vec();
        p.extend_from_slice(payload);
        let token = self.engine.token(0);
        self.dgram(Via::Transfer(SockRef(0)), Some(token), peer, &p);
    }

    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
        self.engine.on_timers(self.now, &mut self.io);
        self.engine.flush(self.now, &mut self.io);
    }
}

fn error_of(p: &[u8]) -> (u16, String) {
    match Packet::decode(p).unwrap() {
        Packet::Error { code, message } => (code.0, String::from_utf8_lossy(message).into()),
        other => panic!("not an error: {other:?}"),
    }
}

#[test]
fn plain_read_to_completion() {
    let mut r = rig(|_| {});
    r.request(CLIENT, b"\x00\x01small\x00octet\x00");
    let sent = r.io.take();
    assert_eq!(r.io.opened, ["192.0.2.1:0".parse::<SocketAddr>().unwrap()], "bound to the request's address");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, Via::Transfer(SockRef(0)));
    assert_eq!(sent[0].3.len(), 4 + 512);
    assert_eq!(&sent[0].3[..4], &[0, 3, 0, 1]);
    r.ack(CLIENT, 1);
    let sent = r.io.take();
    assert_eq!(sent[0].3.len(), 4 + 488);
    r.ack(CLIENT, 2);
    assert_eq!(r.io.closed, [SockRef(0)]);
    assert_eq!(r.engine.active, 0);
    assert_eq!(r.counters.get(Counter::Ok), 1);
    assert_eq!(r.counters.get(Counter::Bytes), 1000);
}

#[test]
fn oack_and_windows() {
    let mut r = rig(|_| {});
    r.request(CLIENT, b"\x00\x01small\x00octet\x00blksize\x00100\x00windowsize\x004\x00tsize\x000\x00");
    let sent = r.io.take();
    assert_eq!(sent[0].3, b"\x00\x06blksize\x00100\x00windowsize\x004\x00tsize\x001000\x00");
    r.ack(CLIENT, 0);
    assert_eq!(r.io.take().len(), 4);
    r.ack(CLIENT, 4);
    assert_eq!(r.io.take().len(), 4);
    r.ack(CLIENT, 8);
    let last = r.io.take();
    assert_eq!(last.len(), 3, "blocks 9, 10 and the empty 11th");
    assert_eq!(last[2].3, [0, 3, 0, 11]);
    r.ack(CLIENT, 11);
    assert_eq!(r.counters.get(Counter::Ok), 1);
}

#[test]
fn repeated_request_is_one_transfer() {
    let mut r = rig(|_| {});
    let rrq = b"\x00\x01small\x00octet\x00tsize\x000\x00";
    r.request(CLIENT, rrq);
    r.request(CLIENT, rrq);
    r.request(CLIENT, rrq);
    let sent = r.io.take();
    assert_eq!(sent.len(), 3, "one OACK per request datagram");
    assert!(sent.iter().all(|s| s.3 == b"\x00\x06tsize\x001000\x00"));
    assert_eq!(r.io.opened.len(), 1, "no second transfer");
    assert_eq!(r.counters.get(Counter::DuplicateRequests), 2);
    r.ack(CLIENT, 0);
    r.io.take();
    // Once confirmed, a repeat is ignored.
    r.request(CLIENT, rrq);
    assert!(r.io.take().is_empty());
    // A different request from the same port replaces the transfer.
    r.request(CLIENT, b"\x00\x01text\x00octet\x00");
    assert_eq!(r.io.opened.len(), 2);
    assert_eq!(r.counters.get(Counter::Errors), 1);
}

/// A request that waited in the listening socket's queue since `arrived_ms`, read now.
fn request_from_queue(r: &mut Rig, payload: &[u8], arrived_ms: u64) {
    r.dgram_arrived(Via::Listen(0), None, CLIENT, payload, Some(Timestamp::from_micros(arrived_ms * 1000)));
}

/// Moves the rig's clock to `ms`.
fn at_ms(r: &mut Rig, ms: u64) {
    let to = Timestamp::from_micros(ms * 1000);
    r.advance(to.saturating_since(r.now));
}

const SMALL_RRQ: &[u8] = b"\x00\x01small\x00octet\x00";

#[test]
fn a_copy_read_before_the_first_answer_is_acknowledged_resends_nothing() {
    let rrq = SMALL_RRQ;
    // The client asked at 9.0 s and again at 9.5 s (no answer yet); the server reads both at
    // 10.0 s. The copy says nothing about the answer, which left after it arrived.
    let mut r = rig(|_| {});
    at_ms(&mut r, 10_000);
    request_from_queue(&mut r, rrq, 9_000);
    request_from_queue(&mut r, rrq, 9_500);
    assert_eq!(r.io.take().len(), 1, "one DATA 1, not resent for the copy");
    assert_eq!(r.counters.get(Counter::DuplicateRequests), 1);
    // A repeat that arrived after the answer left is the client's: the answer goes again.
    at_ms(&mut r, 10_100);
    r.request(CLIENT, rrq);
    assert_eq!(r.io.take().len(), 1, "DATA 1 again");
}

#[test]
fn a_copy_read_once_the_transfer_is_over_starts_nothing() {
    let rrq = SMALL_RRQ;
    // The transfer is on its final block when a copy is read: no second transfer.
    let mut r = rig(|_| {});
    at_ms(&mut r, 10_000);
    request_from_queue(&mut r, rrq, 9_000);
    r.ack(CLIENT, 1);
    r.io.take();
    request_from_queue(&mut r, rrq, 9_500);
    assert!(r.io.take().is_empty(), "nothing for the copy");
    assert_eq!(r.io.opened.len(), 1, "no second transfer");
    r.ack(CLIENT, 2);
    assert_eq!(r.counters.get(Counter::Ok), 1, "the transfer completes");

    // The transfer is over when a copy is read: it starts nothing (a client that keeps its
    // port would take its DATA 1 for its next file's); the same request sent afterwards does.
    at_ms(&mut r, 10_050);
    request_from_queue(&mut r, rrq, 9_600);
    assert!(r.io.take().is_empty(), "nothing for the copy");
    assert_eq!((r.io.opened.len(), r.engine.active), (1, 0), "no second transfer");
    request_from_queue(&mut r, rrq, 10_040);
    assert_eq!(r.io.take().len(), 1, "asked again after the transfer: served");
    assert_eq!(r.io.opened.len(), 2);
    assert_eq!(r.counters.get(Counter::DuplicateRequests), 2);
}

#[test]
fn a_copy_that_arrived_while_the_turn_answering_it_went_on_starts_nothing() {
    // A long loop turn (a CPU quota paused it): it began at 10,000 ms, started the transfer,
    // and its sends left at 10,080. The client's repeat arrived at 10,050, before the answer
    // left: a copy, even once the transfer is over.
    let ms = |ms: u64| Timestamp::from_micros(ms * 1000);
    let mut r = rig(|_| {});
    at_ms(&mut r, 10_000);
    let d = Datagram {
        via: Via::Listen(0),
        slot: None,
        peer: CLIENT.parse().unwrap(),
        local: Some(LocalEnd { ip: LOCAL.parse().unwrap(), ifindex: 0 }),
        arrived: Some(ms(9_000)),
        payload: SMALL_RRQ,
        truncated: false,
    };
    r.engine.on_datagram(r.now, &d, &mut r.io);
    r.engine.flush(r.now, &mut r.io);
    r.engine.answers_sent(r.now, ms(10_080));
    assert_eq!(r.io.take().len(), 1);
    at_ms(&mut r, 10_200);
    r.ack(CLIENT, 1);
    r.ack(CLIENT, 2);
    assert_eq!((r.counters.get(Counter::Ok), r.engine.active), (1, 0));
    r.io.take();
    request_from_queue(&mut r, SMALL_RRQ, 10_050);
    assert!(r.io.take().is_empty(), "nothing for the copy");
    assert_eq!(r.io.opened.len(), 1, "no second transfer");
    request_from_queue(&mut r, SMALL_RRQ, 10_081);
    assert_eq!(r.io.opened.len(), 2, "arrived after the answer left: a new request");
}

#[test]
fn a_first_answer_that_waited_for_room_times_its_copies_when_it_goes() {
    // Every send slot is taken when the request is read at 10,000 ms: DATA 1 waits, and leaves
    // only in a turn that ends at 10,300. A repeat that arrived at 10,200 is still a copy.
    let mut r = rig(|_| {});
    at_ms(&mut r, 10_000);
    r.io.full = true;
    request_from_queue(&mut r, SMALL_RRQ, 9_000);
    assert!(r.io.take().is_empty(), "no room: DATA 1 waits");
    r.io.full = false;
    at_ms(&mut r, 10_250);
    r.engine.answers_sent(r.now, Timestamp::from_micros(10_300_000));
    assert_eq!(r.io.take().len(), 1, "DATA 1 goes");
    at_ms(&mut r, 10_400);
    r.ack(CLIENT, 1);
    r.ack(CLIENT, 2);
    assert_eq!(r.engine.active, 0);
    request_from_queue(&mut r, SMALL_RRQ, 10_200);
    assert_eq!(r.io.opened.len(), 1, "a copy: no second transfer");
}

#[test]
fn a_copy_of_a_refused_request_gets_no_second_error() {
    // A refusal: its copy gets no second ERROR (which the client, asking for its next file from
    // the same port, would take for that file's answer).
    let mut r = rig(|_| {});
    at_ms(&mut r, 10_000);
    let miss = b"\x00\x01missing\x00octet\x00";
    request_from_queue(&mut r, miss, 9_000);
    assert_eq!(error_of(&r.io.take()[0].3).0, 1);
    request_from_queue(&mut r, miss, 9_500);
    assert!(r.io.take().is_empty(), "no second ERROR for the copy");
    at_ms(&mut r, 10_100);
    r.request(CLIENT, miss);
    assert_eq!(error_of(&r.io.take()[0].3).0, 1, "asked again: answered again");
}

#[test]
fn requests_that_are_no_copies_are_served() {
    // A client that asks for another file and then for the first again, all before any answer
    // (no real client does; a test may): each request is new, for the client moved on.
    let mut r = rig(|_| {});
    at_ms(&mut r, 10_000);
    request_from_queue(&mut r, SMALL_RRQ, 9_000);
    request_from_queue(&mut r, b"\x00\x01text\x00octet\x00", 9_100);
    request_from_queue(&mut r, SMALL_RRQ, 9_200);
    assert_eq!((r.io.opened.len(), r.engine.active), (3, 1), "three transfers, the last one running");

    // Without arrival times (a kernel that gives none) every request is read as it comes.
    let miss = b"\x00\x01missing\x00octet\x00";
    let mut r = rig(|_| {});
    at_ms(&mut r, 10_000);
    r.dgram_arrived(Via::Listen(0), None, CLIENT, miss, None);
    r.dgram_arrived(Via::Listen(0), None, CLIENT, miss, None);
    assert_eq!(r.io.take().len(), 2);
}

#[test]
fn foreign_port_gets_error_5_and_transfer_goes_on() {
    let mut r = rig(|_| {});
    r.request(CLIENT, b"\x00\x01small\x00octet\x00");
    r.io.take();
    r.ack("192.0.2.10:2001", 1);
    let sent = r.io.take();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1, "192.0.2.10:2001".parse::<SocketAddr>().unwrap());
    assert_eq!(error_of(&sent[0].3).0, 5);
    assert_eq!(r.counters.get(Counter::Foreign), 1);
    // An ERROR from a foreign port is not answered.
    let token = r.engine.token(0);
    r.dgram(Via::Transfer(SockRef(0)), Some(token), "192.0.2.99:1", b"\x00\x05\x00\x00x\x00");
    assert!(r.io.take().is_empty());
    r.ack(CLIENT, 1);
    assert_eq!(r.io.take().len(), 1, "the real client continues");
}

#[test]
fn refusals_and_errors() {
    let mut r = rig(|_| {});
    let cases: [(&[u8], u16); 8] = [
        (b"\x00\x01missing\x00octet\x00", 1),
        (b"\x00\x01../etc/passwd\x00octet\x00", 2),
        (b"\x00\x02small\x00octet\x00", 2),
        (b"\x00\x01small\x00mail\x00", 4),
        (b"\x00\x01small\x00binary\x00", 4),
        (b"\x00\x09", 4),
        (b"\x00\x04\x00\x01", 5),
        (b"\x00\x03\x00\x01data", 5),
    ];
    for (payload, code) in cases {
        r.request(CLIENT, payload);
        let sent = r.io.take();
        assert_eq!(sent.len(), 1, "{payload:?}");
        assert_eq!(error_of(&sent[0].3).0, code, "{payload:?}");
        assert_eq!(sent[0].2.map(|l| l.ip), Some(LOCAL.parse().unwrap()), "reply from the request's address");
    }
    // An ERROR to the listening port is never answered.
    r.request(CLIENT, b"\x00\x05\x00\x00bye\x00");
    assert!(r.io.take().is_empty());
    assert_eq!(r.engine.active, 0);
}

#[test]
fn busy_is_an_answer_not_silence() {
    let mut r = rig(|c| c.io.max_transfers = 1);
    r.request(CLIENT, b"\x00\x01small\x00octet\x00");
    r.io.take();
    // The client acknowledges: its transfer progresses and is never made to give way.
    let token = r.engine.token(0);
    r.dgram(Via::Transfer(SockRef(0)), Some(token), CLIENT, &wire::ack(1));
    r.io.take();
    r.request("192.0.2.11:2000", b"\x00\x01small\x00octet\x00");
    let sent = r.io.take();
    assert_eq!(error_of(&sent[0].3), (0, "server busy, try again".into()));
    assert_eq!(r.counters.get(Counter::Busy), 1);
}

#[test]
fn a_full_table_makes_room_by_ending_the_oldest_silent_transfer() {
    let mut r = rig(|c| c.io.max_transfers = 3);
    // Three requests whose clients never answer (forged, say), then a fourth.
    for n in 1..=3 {
        r.request(&format!("198.51.100.{n}:1000"), b"\x00\x01small\x00octet\x00");
    }
    r.io.take();
    r.request("192.0.2.11:2000", b"\x00\x01small\x00octet\x00");
    let sent = r.io.take();
    assert_eq!(&sent[0].3[..4], &[0, 3, 0, 1], "DATA 1: served, not busy");
    assert_eq!((r.counters.get(Counter::Busy), r.counters.get(Counter::Evicted)), (0, 1));
    assert_eq!(r.io.closed.len(), 1, "the oldest silent transfer's socket is closed");
    assert_eq!(r.counters.get(Counter::Active), 3);
}

#[test]
fn uefi_probe_counted_as_probe() {
    let mut r = rig(|_| {});
    r.request(CLIENT, b"\x00\x01small\x00octet\x00tsize\x000\x00blksize\x001468\x00");
    r.io.take();
    let token = r.engine.token(0);
    r.dgram(Via::Transfer(SockRef(0)), Some(token), CLIENT, b"\x00\x05\x00\x08User aborted the transfer\x00");
    assert!(r.io.take().is_empty());
    assert_eq!(r.counters.get(Counter::Probes), 1);
    assert_eq!(r.counters.get(Counter::Errors), 0);
    assert_eq!(r.io.closed.len(), 1);
}

#[test]
fn single_port_mode() {
    let mut r = rig(|c| c.io.single_port = true);
    r.request(CLIENT, b"\x00\x01small\x00octet\x00");
    let sent = r.io.take();
    assert!(r.io.opened.is_empty(), "no transfer socket");
    assert_eq!(sent[0].0, Via::Listen(0));
    assert_eq!(sent[0].2.map(|l| l.ip), Some(LOCAL.parse().unwrap()));
    // Another client on the same port number is another transfer.
    r.request("192.0.2.11:2000", b"\x00\x01text\x00octet\x00");
    assert_eq!(r.io.take().len(), 1);
    assert_eq!(r.engine.active, 2);
    r.ack(CLIENT, 1);
    let sent = r.io.take();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1, CLIENT.parse::<SocketAddr>().unwrap());
    r.ack(CLIENT, 2);
    assert_eq!(r.counters.get(Counter::Ok), 1);
    // An ACK from a client without a transfer.
    r.ack("192.0.2.12:1", 1);
    assert_eq!(error_of(&r.io.take()[0].3).0, 5);
}

#[test]
fn a_datagram_read_from_the_socket_of_an_ended_transfer_is_not_taken_for_its_slot_s_next() {
    // A transfer ends and the next takes its slot with a socket of its own; an ACK read late
    // from the first socket names the slot, but not the socket the slot's transfer uses now.
    let mut r = rig(|_| {});
    let rrq = b"\x00\x01small\x00octet\x00";
    r.request(CLIENT, rrq);
    r.ack(CLIENT, 1);
    r.ack(CLIENT, 2);
    assert_eq!(r.counters.get(Counter::Ok), 1);
    r.request("192.0.2.11:2000", rrq);
    r.io.take();
    let token = r.engine.token(0);
    assert_eq!(r.engine.table.get(0).map(|t| t.route.via()), Some(Via::Transfer(SockRef(1))));
    r.dgram(Via::Transfer(SockRef(0)), Some(token), "192.0.2.11:2000", &wire::ack(1));
    assert!(r.io.take().is_empty(), "the second transfer does not move on");
    // Its own socket's ACK moves it on.
    r.dgram(Via::Transfer(SockRef(1)), Some(token), "192.0.2.11:2000", &wire::ack(1));
    assert_eq!(&r.io.take()[0].3[..4], &[0, 3, 0, 2]);
}

#[test]
fn single_port_late_packets_of_an_ended_transfer_get_no_answer() {
    let mut r = rig(|c| c.io.single_port = true);
    r.request(CLIENT, b"\x00\x01small\x00octet\x00");
    r.io.take();
    r.ack(CLIENT, 1);
    r.io.take();
    r.ack(CLIENT, 2);
    assert_eq!(r.counters.get(Counter::Ok), 1);
    // A duplicate ACK the client sent before it had the final block: from this port an ERROR 5
    // would be taken for the answer to the client's next request.
    r.ack(CLIENT, 1);
    r.ack(CLIENT, 2);
    assert!(r.io.take().is_empty(), "nothing answers a late packet");
    assert_eq!((r.counters.get(Counter::Late), r.counters.get(Counter::Foreign)), (2, 0));
    // The client's next request from the same port is served as usual.
    r.request(CLIENT, b"\x00\x01text\x00octet\x00");
    assert_eq!(r.io.take().len(), 1);
    r.ack(CLIENT, 1);
    assert_eq!(r.counters.get(Counter::Ok), 2);
    // After the dally a packet of no transfer is answered again.
    r.advance(tids::DALLY);
    r.ack(CLIENT, 1);
    assert_eq!(error_of(&r.io.take()[0].3).0, 5);
}

#[test]
fn single_port_next_request_ends_the_transfer_with_nothing_more_sent() {
    let mut r = rig(|c| c.io.single_port = true);
    r.request(CLIENT, b"\x00\x01small\x00octet\x00");
    r.io.take();
    r.ack(CLIENT, 1);
    r.io.take();
    // The final ACK was lost; the client asks for its next file from the same port.
    r.request(CLIENT, b"\x00\x01text\x00octet\x00");
    let sent = r.io.take();
    assert_eq!(sent.len(), 1, "only the new transfer's first block: {sent:?}");
    assert_eq!(&sent[0].3[..4], b"\x00\x03\x00\x01");
    // The old transfer's timer never fires again: only the new one's resends follow.
    for _ in 0..20 {
        r.advance(Duration::from_millis(500));
        for (_, _, _, p) in r.io.take() {
            assert_eq!(&p[..4], b"\x00\x03\x00\x01", "a resend of the new transfer's block 1 only");
            assert_eq!(p.len(), 4 + 3, "text is 3 bytes");
        }
    }
}

#[test]
fn broadcast_requests_ignored() {
    let mut r = rig(|_| {});
    let d = Datagram {
        via: Via::Listen(0),
        slot: None,
        peer: CLIENT.parse().unwrap(),
        local: Some(LocalEnd { ip: "255.255.255.255".parse().unwrap(), ifindex: 0 }),
        arrived: None,
        payload: b"\x00\x01small\x00octet\x00",
        truncated: false,
    };
    r.engine.on_datagram(r.now, &d, &mut r.io);
    assert!(r.io.take().is_empty());
    assert_eq!(r.counters.get(Counter::Requests), 0);
}

#[test]
fn silent_unconfirmed_client_gets_one_timed_resend_then_expires() {
    let mut r = rig(|_| {});
    r.request(CLIENT, b"\x00\x01small\x00octet\x00");
    let first = r.io.take();
    for _ in 0..70 {
        r.advance(Duration::from_millis(100));
    }
    let again = r.io.take();
    assert_eq!(again.len(), 1, "one timed resend to an unconfirmed client, no more");
    assert_eq!(again[0].3, first[0].3, "the same DATA 1");
    assert_eq!(r.counters.get(Counter::Timeouts), 1);
    assert_eq!(r.io.closed.len(), 1);
}

/// GRUB's request: options, so the first answer is an OACK.
const GRUB_RRQ: &[u8] = b"\x00\x01small\x00octet\x00blksize\x001024\x00tsize\x000\x00";

#[test]
fn silent_client_gets_the_oack_again_with_backoff_then_expires() {
    let mut r = rig(|_| {});
    r.request(CLIENT, GRUB_RRQ);
    let first = r.io.take();
    assert_eq!(&first[0].3[..2], &[0, 6], "an OACK");
    let mut at = Vec::new();
    for step in 1..=70u64 {
        r.advance(Duration::from_millis(100));
        for (via, _, _, p) in r.io.take() {
            assert_eq!((via, &p), (first[0].0, &first[0].3), "the same OACK from the same port");
            at.push(step * 100);
        }
    }
    assert_eq!(at, [1000, 3000, 5000], "resent after 1 s, 2 s and 2 s, then given up at 6 s");
    assert_eq!(r.counters.get(Counter::Retransmits), 3);
    assert_eq!(r.counters.get(Counter::Timeouts), 1);
    assert_eq!(r.io.closed.len(), 1);
}

#[test]
fn grub_gets_its_file_after_losing_two_ack_0s() {
    // GRUB answers each OACK with one ACK 0 and never repeats it; the first two are lost.
    let mut r = rig(|_| {});
    r.request(CLIENT, GRUB_RRQ);
    let oack = r.io.take();
    r.advance(Duration::from_secs(1));
    assert_eq!(r.io.take(), oack, "the OACK again after 1 s");
    r.advance(Duration::from_millis(1999));
    assert!(r.io.take().is_empty());
    r.advance(Duration::from_millis(1));
    assert_eq!(r.io.take(), oack, "and after 2 s more");
    r.ack(CLIENT, 0);
    let sent = r.io.take();
    assert_eq!((&sent[0].3[..4], sent[0].3.len()), (&[0, 3, 0, 1][..], 4 + 1000), "DATA 1: the whole file");
    r.ack(CLIENT, 1);
    assert_eq!((r.counters.get(Counter::Ok), r.counters.get(Counter::Timeouts)), (1, 0));
}

#[test]
fn confirmed_client_gets_retransmissions() {
    let mut r = rig(|_| {});
    r.request(CLIENT, b"\x00\x01small\x00octet\x00");
    r.io.take();
    r.now = r.now + Duration::from_millis(2);
    r.ack(CLIENT, 1);
    assert_eq!(r.io.take().len(), 1);
    r.advance(Duration::from_millis(50));
    let sent = r.io.take();
    assert_eq!(sent.len(), 1, "DATA 2 again after the adaptive timeout");
    assert_eq!(&sent[0].3[..4], &[0, 3, 0, 2]);
}

#[test]
fn backpressure_resumes() {
    let mut r = rig(|_| {});
    r.request(CLIENT, b"\x00\x01small\x00octet\x00blksize\x008\x00windowsize\x0016\x00");
    r.io.take();
    r.io.full = true;
    r.ack(CLIENT, 0);
    assert!(r.io.take().is_empty());
    r.io.full = false;
    r.engine.flush(r.now, &mut r.io);
    assert_eq!(r.io.take().len(), 16);
}

/// A rig serving `big`, 200,000 bytes, as well.
fn rig_with_big(set: impl FnOnce(&mut ServerConfig)) -> Rig {
    let r = rig(set);
    std::fs::write(r.dir.path().join("big"), vec![5u8; 200_000]).unwrap();
    r
}

/// Asks for `big` with `blksize` and `windowsize`; returns the OACK.
fn request_big(r: &mut Rig, blksize: u16, window: u16) -> Vec<u8> {
    let rrq = format!("\0\x01big\0octet\0blksize\0{blksize}\0windowsize\0{window}\0");
    r.request(CLIENT, rrq.as_bytes());
    let sent = r.io.take();
    assert_eq!(sent.len(), 1);
    assert!(r.io.take_runs().is_empty(), "the OACK is no run");
    sent[0].3.clone()
}

#[test]
fn a_window_of_full_blocks_is_one_run() {
    let mut r = rig_with_big(|_| {});
    assert_eq!(request_big(&mut r, 512, 16), b"\x00\x06blksize\x00512\x00windowsize\x0016\x00");
    r.ack(CLIENT, 0);
    assert_eq!(r.io.take_runs(), [Run::of(1..=16, 516, 516)], "blocks 1..=16 as one send");
    assert_eq!(r.io.take().len(), 16, "cut into 16 datagrams");
    r.ack(CLIENT, 16);
    assert_eq!(r.io.take_runs(), [Run::of(17..=32, 516, 516)]);
}

#[test]
fn the_final_short_block_ends_the_last_run() {
    // small: 1000 bytes, blocks of 300: three full blocks and one of 100.
    let mut r = rig(|_| {});
    r.request(CLIENT, b"\x00\x01small\x00octet\x00blksize\x00300\x00windowsize\x0016\x00");
    r.io.take();
    r.ack(CLIENT, 0);
    assert_eq!(r.io.take_runs(), [Run::of(1..=4, 304, 104)]);
    // 200,000 bytes in blocks of 1024: block 196 holds the last 320 bytes; a window of 64 from
    // block 193 holds four blocks.
    let mut r = rig_with_big(|_| {});
    request_big(&mut r, 1024, 64);
    r.ack(CLIENT, 0);
    r.ack(CLIENT, 64);
    r.ack(CLIENT, 128);
    r.io.take_runs();
    r.ack(CLIENT, 192);
    assert_eq!(r.io.take_runs(), [Run::of(193..=196, 1028, 324)], "the short block closes the run");
    r.ack(CLIENT, 196);
    assert!(r.io.take_runs().is_empty(), "nothing after the final block");
    assert_eq!(r.counters.get(Counter::Ok), 1);
}

#[test]
fn a_run_holds_at_most_max_run_segments() {
    let mut r = rig_with_big(|c| c.serve.limits.max_windowsize = 100);
    request_big(&mut r, 8, 100);
    r.ack(CLIENT, 0);
    // 100 datagrams of 12 bytes: the first MAX_RUN (64) in one send, the other 36 in the next.
    let cap = MAX_RUN as u16;
    assert_eq!(r.io.take_runs(), [Run::of(1..=cap, 12, 12), Run::of(cap + 1..=100, 12, 12)]);
}

#[test]
fn a_run_holds_at_most_max_run_bytes() {
    let mut r = rig_with_big(|_| {});
    request_big(&mut r, 1468, 64);
    r.ack(CLIENT, 0);
    // 44 datagrams of 1472 bytes fit 65,000; 45 do not.
    let fit = (MAX_RUN_BYTES / 1472) as u16;
    assert_eq!(fit, 44);
    assert_eq!(r.io.take_runs(), [Run::of(1..=fit, 1472, 1472), Run::of(fit + 1..=64, 1472, 1472)]);
}

#[test]
fn a_retransmitted_window_is_one_run_again() {
    let mut r = rig_with_big(|_| {});
    request_big(&mut r, 512, 8);
    r.now = r.now + Duration::from_millis(2);
    r.ack(CLIENT, 0);
    assert_eq!(r.io.take_runs(), [Run::of(1..=8, 516, 516)]);
    r.io.take();
    // No ACK: after the timeout the same window leaves again, as one send.
    for _ in 0..20 {
        r.advance(Duration::from_millis(100));
        if !r.io.runs.is_empty() {
            break;
        }
    }
    assert_eq!(r.io.take_runs(), [Run::of(1..=8, 516, 516)], "the window again, whole");
}

#[test]
fn graceful_stop() {
    let mut r = rig(|c| c.grace = Duration::from_secs(1));
    r.request(CLIENT, b"\x00\x01small\x00octet\x00");
    r.io.take();
    r.engine.begin_stop(r.now);
    assert!(!r.engine.is_finished());
    r.request("192.0.2.11:2000", b"\x00\x01small\x00octet\x00");
    assert_eq!(error_of(&r.io.take()[0].3).1, "server is shutting down");
    r.ack(CLIENT, 1);
    assert_eq!(r.io.take().len(), 1, "transfers in flight go on");
    r.advance(Duration::from_millis(1001));
    let sent = r.io.take();
    assert_eq!(error_of(&sent.last().unwrap().3), (0, "server shutting down".into()));
    assert!(r.engine.is_finished());
}

#[test]
fn netascii_served_translated_without_tsize() {
    let mut r = rig(|_| {});
    r.request(CLIENT, b"\x00\x01text\x00netascii\x00tsize\x000\x00");
    let sent = r.io.take();
    assert_eq!(sent[0].3, b"\x00\x03\x00\x01a\r\nb", "no OACK: tsize is left out for netascii");
}

#[test]
fn peer_index_survives_growth() {
    // Hundreds of transfers force the index to grow and rehash; every one must still be found.
    let mut r = rig(|c| c.io.single_port = true);
    let peers: Vec<String> = (0..500).map(|i| format!("192.0.2.{}:{}", 10 + i % 200, 1000 + i)).collect();
    for p in &peers {
        r.request(p, b"\x00\x01small\x00octet\x00");
    }
    r.io.take();
    assert_eq!(r.engine.active, 500);
    for p in &peers {
        r.dgram(Via::Listen(0), None, p, &wire::ack(1));
        let sent = r.io.take();
        assert_eq!(sent.len(), 1, "{p}");
        assert_eq!(&sent[0].3[..4], &[0, 3, 0, 2], "{p}: DATA 2, not ERROR 5");
    }
}

#[test]
fn transfers_of_one_request_share_its_copy_until_the_last_ends() {
    let mut r = rig(|c| c.io.single_port = true);
    let (rrq, other) = (b"\x00\x01small\x00octet\x00blksize\x00100\x00", b"\x00\x01small\x00octet\x00");
    let peers = ["192.0.2.10:2000", "192.0.2.11:2000", "192.0.2.12:2000"];
    for p in peers {
        r.request(p, rrq);
    }
    r.request("192.0.2.13:2000", other);
    r.io.take();
    assert_eq!((r.engine.active, r.engine.table.requests_kept()), (4, 2));
    // Each still tells its own repeat: answered again, no new transfer.
    r.request(peers[1], rrq);
    assert_eq!(r.io.take().len(), 1);
    assert_eq!((r.engine.active, r.engine.counters.get(Counter::DuplicateRequests)), (4, 1));
    // Refused by the client: each ends, and the copy goes with the last.
    for (i, p) in peers.iter().enumerate() {
        r.dgram(Via::Listen(0), None, p, b"\x00\x05\x00\x08no\x00");
        assert_eq!(r.engine.table.requests_kept(), if i < 2 { 2 } else { 1 }, "{p}");
    }
    assert_eq!(r.engine.active, 1);
}

/// Every active transfer costs one slot: keep it from growing unnoticed. (104: the generation
/// 4, the timer links 12, the client's address 8, the socket, its port and the mode 8, the read
/// state machine 64, the pointer to what the record keeps of the request 8.) tests/memory.rs
/// measures what a held transfer costs in all.
#[test]
fn transfer_state_stays_small() {
    assert_eq!(std::mem::size_of::<Slot>(), 104);
    assert_eq!(std::mem::size_of::<ReadTransfer>(), 64);
}

#[test]
fn same_request_after_last_block_starts_a_new_transfer() {
    // The request for the next session overtakes the final ACK of the previous one.
    let mut r = rig(|_| {});
    let rrq = b"\x00\x01small\x00octet\x00";
    r.request(CLIENT, rrq);
    r.ack(CLIENT, 1);
    r.io.take();
    r.request(CLIENT, rrq);
    let sent = r.io.take();
    assert_eq!(sent.len(), 1, "the new request is answered");
    assert_eq!(&sent[0].3[..4], &[0, 3, 0, 1]);
    assert_eq!(sent[0].0, Via::Transfer(SockRef(1)), "from a new transfer");
    assert_eq!(r.counters.get(Counter::Ok), 1);
    assert_eq!(r.counters.get(Counter::DuplicateRequests), 0);
}

#[test]
fn a_client_s_next_transfer_never_gets_the_port_of_its_previous_one() {
    // The backend hands out the port freed last, as the kernel may. A client ignores answers
    // from the transfer ID it has just finished with: on the same port again, its next
    // transfer would never be heard, whatever it repeats.
    let mut r = rig(|_| {});
    let rrq = b"\x00\x01small\x00octet\x00";
    r.request(CLIENT, rrq);
    r.ack(CLIENT, 1);
    r.ack(CLIENT, 2);
    assert_eq!((r.io.closed.as_slice(), r.counters.get(Counter::Ok)), ([SockRef(0)].as_slice(), 1));
    r.request(CLIENT, rrq);
    assert_eq!(r.io.ports.len(), 2);
    assert_ne!(r.io.ports[1], r.io.ports[0], "the same client's next transfer has another port");
    // Another client may have the freed port: only the client that just used it is kept off.
    r.ack(CLIENT, 1);
    r.ack(CLIENT, 2);
    r.request("192.0.2.11:2000", rrq);
    assert_eq!(r.io.ports[2], r.io.ports[1], "another client takes the port freed last");
}

#[test]
fn first_data_waits_for_room_and_is_never_empty() {
    // A plain request (DATA 1 first) while the backend has no room for DATA.
    let mut r = rig(|_| {});
    r.io.full = true;
    r.request(CLIENT, b"\x00\x01small\x00octet\x00");
    assert!(r.io.take().is_empty(), "deferred, not sent without its payload");
    r.io.full = false;
    r.engine.flush(r.now, &mut r.io);
    let sent = r.io.take();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].3.len(), 4 + 512, "DATA 1 with its 512 bytes");
    // An OACK goes out at once even without room: it only exists with the request at hand.
    r.io.full = true;
    r.request("192.0.2.11:2000", b"\x00\x01small\x00octet\x00tsize\x000\x00");
    assert_eq!(r.io.take()[0].3, b"\x00\x06tsize\x001000\x00");
}

#[test]
fn upload_lands_only_after_commit_then_final_ack() {
    let mut r = rig(|c| uploads_in_root(c, true, true));
    r.request(CLIENT, b"\x00\x02small\x00octet\x00tsize\x00600\x00");
    assert_eq!(r.io.take()[0].3, b"\x00\x06tsize\x00600\x00");
    r.data(CLIENT, 1, &[9; 512]);
    assert_eq!(r.io.take()[0].3, wire::ack(1));
    r.data(CLIENT, 2, &[9; 88]);
    assert!(r.io.take().is_empty(), "final ACK waits for the commit");
    assert_eq!(std::fs::read(r.dir.path().join("small")).unwrap(), vec![7u8; 1000], "old file still in place");
    assert_eq!(r.run_commits(), 1);
    assert_eq!(r.io.take()[0].3, wire::ack(2));
    assert_eq!(std::fs::read(r.dir.path().join("small")).unwrap(), vec![9u8; 600]);
    assert_eq!(r.files(), ["small", "text"], "no temporary file left");
    r.advance(Duration::from_secs(5));
    assert_eq!(r.counters.get(Counter::Ok), 1);
    assert_eq!(r.counters.get(Counter::Uploaded), 600);
}

#[test]
fn upload_refusals_with_exact_codes() {
    // Uploads into the root (the rig's only directory), on purpose.
    let cases: [(Change, &[u8], u16); 6] = [
        (|_| {}, b"\x00\x02new\x00octet\x00", 2),
        (|c| uploads_in_root(c, true, false), b"\x00\x02small\x00octet\x00", 6),
        (|c| uploads_in_root(c, false, true), b"\x00\x02new\x00octet\x00", 1),
        (
            |c| {
                uploads_in_root(c, true, false);
                c.serve.upload.max_size = 100;
            },
            b"\x00\x02new\x00octet\x00tsize\x00101\x00",
            3,
        ),
        (|c| uploads_in_root(c, true, false), b"\x00\x02../x\x00octet\x00", 2),
        (
            |c| {
                uploads_in_root(c, true, false);
                c.serve.allow_write_from = vec![Cidr::parse("10.0.0.0/8").unwrap()];
            },
            b"\x00\x02new\x00octet\x00",
            2,
        ),
    ];
    for (i, (set, req, code)) in cases.into_iter().enumerate() {
        let mut r = rig(set);
        r.request(CLIENT, req);
        let sent = r.io.take();
        assert_eq!(error_of(&sent[0].3).0, code, "case {i}: {:?}", req.escape_ascii().to_string());
        assert_eq!(r.files(), ["small", "text"], "nothing written");
        assert_eq!(std::fs::read(r.dir.path().join("small")).unwrap(), vec![7u8; 1000]);
    }
}

#[test]
fn abandoned_and_oversized_uploads_leave_nothing() {
    let mut r = rig(|c| {
        uploads_in_root(c, true, false);
        c.serve.upload.max_size = 1000;
    });
    r.request(CLIENT, b"\x00\x02up\x00octet\x00");
    r.io.take();
    r.data(CLIENT, 1, &[1; 512]);
    assert_eq!(r.files(), ["small", "text"], "the upload's file has no name while receiving");
    // Too big: ERROR 3 and the temporary file goes.
    r.data(CLIENT, 2, &[1; 512]);
    assert_eq!(error_of(&r.io.take().last().unwrap().3).0, 3);
    assert_eq!(r.files(), ["small", "text"]);
    // A client that stops sending: given up, nothing left behind.
    r.request("192.0.2.11:2000", b"\x00\x02up2\x00octet\x00");
    r.io.take();
    let token = r.engine.token(0);
    let mut p = wire::data_header(1).to_vec();
    p.extend_from_slice(&[1; 512]);
    r.dgram(Via::Transfer(SockRef(1)), Some(token), "192.0.2.11:2000", &p);
    for _ in 0..200 {
        r.advance(Duration::from_millis(100));
    }
    assert_eq!(r.counters.get(Counter::Timeouts), 1);
    assert_eq!(r.files(), ["small", "text"]);
}

#[test]
fn allow_list_and_rate_limit_drop_silently() {
    // One worker: it holds the whole rate and burst.
    let mut r = rig(|c| {
        c.workers = 1;
        c.serve.allow = vec![Cidr::parse("192.0.2.0/28").unwrap()];
        c.serve.rate_per_source = Some(SourceRate { per_second: 1.0, burst: 2.0 });
        c.serve.rate_limit_always = true;
    });
    r.request("198.51.100.1:1", b"\x00\x01small\x00octet\x00");
    assert!(r.io.take().is_empty(), "outside the allow list: ignored");
    assert_eq!(r.counters.get(Counter::Ignored), 1);
    for port in 1..=4 {
        r.request(&format!("192.0.2.5:{port}"), b"\x00\x01small\x00octet\x00");
    }
    assert_eq!(r.io.take().len(), 2, "a burst of two, then dropped");
    assert_eq!(r.counters.get(Counter::RateLimited), 2);
    // A repeat of an existing transfer is not a new transfer and is not limited.
    r.request("192.0.2.5:1", b"\x00\x01small\x00octet\x00");
    assert_eq!(r.io.take().len(), 1);
}

#[test]
fn one_address_is_served_in_full_until_the_worker_is_under_pressure() {
    // Clients behind NAT share one address: an idle server serves them all, far past the burst.
    let mut r = rig(|c| {
        c.workers = 1;
        c.serve.rate_per_source = Some(SourceRate { per_second: 1.0, burst: 2.0 });
        c.io.max_transfers = 20;
    });
    for port in 1..=10 {
        r.request(&format!("192.0.2.5:{port}"), b"\x00\x01small\x00octet\x00");
    }
    assert_eq!(r.io.take().len(), 10, "ten transfers from one address on an idle worker");
    assert_eq!(r.counters.get(Counter::RateLimited), 0);
    // Half the table in use: pressure. The address that spent its tokens is held back now,
    // while another address is still served.
    r.request("192.0.2.5:11", b"\x00\x01small\x00octet\x00");
    assert!(r.io.take().is_empty(), "the heavy source is dropped under pressure");
    assert_eq!(r.counters.get(Counter::RateLimited), 1);
    r.request("192.0.2.6:1", b"\x00\x01small\x00octet\x00");
    assert_eq!(r.io.take().len(), 1, "another source is served");
}

#[test]
fn under_pressure_no_source_holds_more_than_its_share() {
    let mut r = rig(|c| c.io.max_transfers = 16);
    // One source holds eight transfers that progress (each acknowledged its DATA 1): half the
    // table, the pressure line.
    for port in 1..=8u16 {
        r.request(&format!("198.51.100.7:{port}"), b"\x00\x01small\x00octet\x00");
        let token = r.engine.token(u32::from(port) - 1);
        r.dgram(
            Via::Transfer(SockRef(u32::from(port) - 1)),
            Some(token),
            &format!("198.51.100.7:{port}"),
            &wire::ack(1),
        );
    }
    r.io.take();
    assert_eq!(r.counters.get(Counter::Active), 8);
    // Its ninth is refused as busy; another source is served.
    r.request("198.51.100.7:9", b"\x00\x01small\x00octet\x00");
    assert_eq!(error_of(&r.io.take()[0].3), (0, "server busy, try again".into()));
    r.request("192.0.2.11:2000", b"\x00\x01small\x00octet\x00");
    assert_eq!(&r.io.take()[0].3[..4], &[0, 3, 0, 1], "another source gets DATA 1");
}

#[test]
fn a_request_that_becomes_no_transfer_ends_no_silent_one() {
    let mut r = rig(|c| c.io.max_transfers = 3);
    for n in 1..=3 {
        r.request(&format!("198.51.100.{n}:1000"), b"\x00\x01small\x00octet\x00");
    }
    r.io.take();
    // A miss in a full table: "file not found", and the silent transfers stay.
    r.request("192.0.2.11:2000", b"\x00\x01missing\x00octet\x00");
    assert_eq!(error_of(&r.io.take()[0].3).0, 1);
    assert_eq!((r.counters.get(Counter::Evicted), r.counters.get(Counter::Active)), (0, 3));
}

#[test]
fn an_engine_from_the_default_configuration_serves_a_read() {
    // A library user's server: the defaults, a root, no command line anywhere.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pxelinux.0"), b"boot me").unwrap();
    let cfg = ServerConfig { root: dir.path().to_path_buf(), ..ServerConfig::default() };
    cfg.validate().unwrap();
    let counters = Arc::new(CachePadded::new(Counters::default()));
    let parts = EngineParts {
        root: Arc::new(Root::open(&cfg.root, cfg.follow_symlinks).unwrap()),
        uploads: None,
        commits: None,
        counters: Arc::clone(&counters),
        capacity: cfg.io.max_transfers,
    };
    let policy = Arc::new(cfg.effective_policy());
    let mut engine = Engine::new(0, policy, EngineSettings::of(&cfg), parts, Timestamp::ZERO);
    let mut io = FakeIo::default();
    let local = LocalEnd { ip: LOCAL.parse().unwrap(), ifindex: 0 };
    let peer: SocketAddr = CLIENT.parse().unwrap();
    let rrq = b"\x00\x01pxelinux.0\x00octet\x00";
    let d = Datagram {
        via: Via::Listen(0),
        slot: None,
        peer,
        local: Some(local),
        arrived: None,
        payload: rrq,
        truncated: false,
    };
    engine.on_datagram(Timestamp::ZERO, &d, &mut io);
    engine.flush(Timestamp::ZERO, &mut io);
    let sent = io.take();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].3, b"\x00\x03\x00\x01boot me", "DATA 1, the whole file");
    let ack = wire::ack(1);
    let token = engine.token(0);
    let d = Datagram {
        via: Via::Transfer(SockRef(0)),
        slot: Some(token.slot()),
        peer,
        local: None,
        arrived: None,
        payload: &ack,
        truncated: false,
    };
    engine.on_datagram(Timestamp::ZERO, &d, &mut io);
    engine.flush(Timestamp::ZERO, &mut io);
    assert_eq!(counters.get(Counter::Ok), 1, "the transfer is done");
}

/// A host whose interfaces all have a 576-byte MTU and whose one broadcast address is
/// 192.0.2.255.
struct SmallHost;

impl HostInfo for SmallHost {
    fn interface_mtu(&mut self, _: u32, _: Timestamp) -> Option<u32> {
        Some(576)
    }

    fn is_interface_broadcast(&mut self, ip: Ipv4Addr, _: Timestamp) -> bool {
        ip == Ipv4Addr::new(192, 0, 2, 255)
    }
}

#[test]
fn the_host_is_asked_through_host_info_and_a_repeat_answers_as_the_first() {
    let mut r = rig(|_| {});
    r.engine = r.engine.with_host(SmallHost);
    let req = b"\x00\x01small\x00octet\x00BLKSIZE\x001468\x00tsize\x000\x00";
    r.request(CLIENT, req);
    let first = r.io.take();
    let fit = crate::proto::options::blksize_for_mtu(576, false);
    let expected = [&b"\x00\x06BLKSIZE\x00"[..], fit.to_string().as_bytes(), b"\x00tsize\x001000\x00"].concat();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].3, expected, "blksize fitted to the interface, in the client's spelling");
    // The repeat is answered from what the transfer kept: the same bytes.
    r.request(CLIENT, req);
    let again = r.io.take();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].3, expected);
    assert_eq!(r.counters.get(Counter::DuplicateRequests), 1);

    let d = Datagram {
        via: Via::Listen(0),
        slot: None,
        peer: "192.0.2.11:2000".parse().unwrap(),
        local: Some(LocalEnd { ip: "192.0.2.255".parse().unwrap(), ifindex: 0 }),
        arrived: None,
        payload: b"\x00\x01small\x00octet\x00",
        truncated: false,
    };
    r.engine.on_datagram(r.now, &d, &mut r.io);
    assert!(r.io.take().is_empty());
    assert_eq!(r.counters.get(Counter::Ignored), 1);
}

mod names;
mod records;
mod reload;
