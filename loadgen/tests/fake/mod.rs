//! A scripted TFTP server on loopback for the load generator's tests. It records every read
//! request (source and filename) and answers each as the test's script says: serve the file
//! lock-step from a new port, refuse it with an ERROR, stay silent, or first replay the last
//! DATA of the previous transfer to that transfer's client, as a server does whose final ACK
//! was lost.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the server does with the n-th read request (counting from 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Send the file, 512-byte blocks, lock-step, from a new port.
    Serve,
    /// ERROR with this code, from the listening port.
    Refuse(u16),
    /// Nothing at all.
    Silent,
    /// The previous transfer's last DATA again, from its port to its client; then, 50 ms
    /// later, serve this request.
    StaleData,
    /// ERROR with this code from the previous transfer's port to its client (as a server
    /// answers a duplicate ACK of a finished transfer); then, 50 ms later, serve this request.
    StaleError(u16),
    /// A DATA 1 of other bytes from another address (127.0.0.2), as a reply a NAT failed to
    /// translate; then, 50 ms later, serve this request.
    FromElsewhere,
}

/// A read request as the server saw it.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    /// Where it came from.
    pub(crate) from: SocketAddr,
    /// The filename asked for.
    pub(crate) file: String,
}

/// The last DATA of a finished transfer: its port (kept open), its client, the packet.
type Last = Option<(Arc<UdpSocket>, SocketAddr, Vec<u8>)>;

/// State shared by the listener and the transfer threads.
struct Shared {
    files: HashMap<String, Vec<u8>>,
    requests: Mutex<Vec<Request>>,
    last: Mutex<Last>,
    stop: AtomicBool,
}

/// The running server; stopped when dropped.
pub(crate) struct FakeServer {
    /// The listening address.
    pub(crate) addr: SocketAddr,
    shared: Arc<Shared>,
    listener: Option<JoinHandle<()>>,
}

impl FakeServer {
    /// Starts a server on 127.0.0.1 serving `files`, answering the n-th request as `script(n)`.
    pub(crate) fn start(files: &[(&str, &[u8])], script: impl Fn(usize) -> Answer + Send + 'static) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let addr = sock.local_addr().unwrap();
        let shared = Arc::new(Shared {
            files: files.iter().map(|(n, d)| (n.to_string(), d.to_vec())).collect(),
            requests: Mutex::new(Vec::new()),
            last: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let sh = Arc::clone(&shared);
        let listener = std::thread::spawn(move || listen(&sock, &sh, &script));
        Self { addr, shared, listener: Some(listener) }
    }

    /// Every read request so far, in order of arrival.
    pub(crate) fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.listener.take() {
            let _ = t.join();
        }
    }
}

/// The listening loop: reads requests until stopped, each answered on its own thread.
fn listen(sock: &UdpSocket, sh: &Arc<Shared>, script: &dyn Fn(usize) -> Answer) {
    let mut buf = [0u8; 1500];
    let mut transfers = Vec::new();
    while !sh.stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
        let p = &buf[..n];
        if p.len() < 4 || p[..2] != [0, 1] {
            continue;
        }
        let name_end = p[2..].iter().position(|&b| b == 0).map_or(p.len(), |e| e + 2);
        let file = String::from_utf8_lossy(&p[2..name_end]).into_owned();
        let index = {
            let mut r = sh.requests.lock().unwrap();
            r.push(Request { from, file: file.clone() });
            r.len() - 1
        };
        let answer = script(index);
        let data = sh.files.get(&file).cloned();
        match (answer, data) {
            (Answer::Silent, _) => {}
            (Answer::Refuse(code), _) => {
                let _ = sock.send_to(&error(code, "refused"), from);
            }
            (_, None) => {
                let _ = sock.send_to(&error(1, "File not found"), from);
            }
            (Answer::Serve | Answer::StaleData | Answer::StaleError(_) | Answer::FromElsewhere, Some(data)) => {
                let sh = Arc::clone(sh);
                transfers.push(std::thread::spawn(move || {
                    if answer == Answer::FromElsewhere {
                        let elsewhere = UdpSocket::bind("127.0.0.2:0").unwrap();
                        let mut packet = vec![0, 3, 0, 1];
                        packet.extend(data.iter().take(512).map(|b| !b));
                        let _ = elsewhere.send_to(&packet, from);
                    }
                    let last = sh.last.lock().unwrap().clone();
                    if let Some((old, client, packet)) = last {
                        match answer {
                            Answer::StaleData => drop(old.send_to(&packet, client)),
                            Answer::StaleError(code) => drop(old.send_to(&error(code, "Unknown transfer ID"), client)),
                            _ => {}
                        }
                    }
                    if answer != Answer::Serve {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    serve(&sh, from, &data);
                }));
            }
        }
    }
    for t in transfers {
        let _ = t.join();
    }
}

/// Sends `data` to `client` lock-step from a new port (each block up to 5 times, 200 ms apart),
/// and records the last DATA as it is sent.
fn serve(sh: &Shared, client: SocketAddr, data: &[u8]) {
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let blocks = data.len() / 512 + 1;
    let mut buf = [0u8; 1500];
    for b in 1..=blocks {
        let chunk = &data[(b - 1) * 512..(b * 512).min(data.len())];
        let mut packet = vec![0, 3, (b >> 8) as u8, b as u8];
        packet.extend_from_slice(chunk);
        if b == blocks {
            // Recorded before the final ACK arrives: the client's next request may come first.
            *sh.last.lock().unwrap() = Some((Arc::clone(&sock), client, packet.clone()));
        }
        let acked = (0..5).any(|_| {
            let _ = sock.send_to(&packet, client);
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                if from == client
                    && n == 4
                    && buf[..2] == [0, 4]
                    && usize::from(u16::from_be_bytes([buf[2], buf[3]])) == b
                {
                    return true;
                }
            }
            false
        });
        if !acked {
            return;
        }
    }
}

/// An ERROR packet.
fn error(code: u16, message: &str) -> Vec<u8> {
    let mut p = vec![0, 5];
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(message.as_bytes());
    p.push(0);
    p
}
