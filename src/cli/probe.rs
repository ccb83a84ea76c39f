//! `bootstorm probe ADDR[:PORT] FILE`: a health check that downloads FILE from a TFTP server
//! with a real read request, as a boot client would, and says whether it came whole.
//!
//! The transfer is the library's [`ReadClient`] over a plain UDP socket: octet mode, blksize and
//! tsize asked (so the server's OACK is checked as strictly as UEFI firmware checks it), or no
//! options at all with `--blksize 0`. The data is counted and dropped; nothing is written.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use bootstorm::proto::options::{MAX_BLKSIZE, MIN_BLKSIZE};
use bootstorm::proto::wire::{self, Mode, Packet};
use bootstorm::proto::{ClientConfig, ClientOutcome, ClientTransmit, ReadClient, RequestOptions, Timestamp};

/// The TFTP port, when the address names none.
const TFTP_PORT: u16 = 69;
/// The whole probe's deadline, in multiples of `--timeout`.
const TOTAL_TIMEOUTS: u32 = 5;
/// The longest `--timeout`.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// The arguments of `probe`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Probe {
    /// The server: an IPv4 or IPv6 address or a host name, with :PORT when not 69 ([::1]:6969).
    #[arg(value_name = "ADDR[:PORT]")]
    pub(crate) addr: String,

    /// The file to download, as a client names it.
    #[arg(value_name = "FILE")]
    pub(crate) file: String,

    /// Seconds of silence from the server before the probe fails (the request or ACK is sent
    /// again twice within them); the whole probe is given five times this. At most 60.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_timeout)]
    pub(crate) timeout: Duration,

    /// Fail when the file is smaller than this many bytes.
    #[arg(long, value_name = "BYTES")]
    pub(crate) min_size: Option<u64>,

    /// The blksize to ask for, with tsize; 0: ask no options (plain RFC 1350, 512-byte blocks).
    #[arg(long, value_name = "N", default_value_t = 1468, value_parser = parse_blksize)]
    pub(crate) blksize: u16,
}

/// `--timeout`: a positive number of seconds, at most [`MAX_TIMEOUT`].
fn parse_timeout(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= MAX_TIMEOUT.as_secs_f64() => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!("a number of seconds above 0 and at most {}", MAX_TIMEOUT.as_secs())),
    }
}

/// `--blksize`: 0, or a block size a server may grant.
fn parse_blksize(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(v) if v == 0 || (MIN_BLKSIZE..=MAX_BLKSIZE).contains(&v) => Ok(v),
        _ => Err(format!("0, or {MIN_BLKSIZE} to {MAX_BLKSIZE}")),
    }
}

/// A transfer that completed.
#[derive(Debug)]
pub(crate) struct Success {
    /// The server's address, as resolved.
    pub(crate) server: SocketAddr,
    /// Bytes received.
    pub(crate) bytes: u64,
    /// From the request to the last block.
    pub(crate) elapsed: Duration,
}

/// Runs the probe: what came, or why it failed (one line, printed after
/// `probe failed: ADDR FILE: `).
pub(crate) fn run(p: &Probe) -> Result<Success, String> {
    let server = resolve(&p.addr).map_err(|e| format!("cannot resolve the address: {e}"))?;
    let local: IpAddr = if server.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
    let sock = UdpSocket::bind((local, 0)).map_err(|e| format!("cannot open a socket: {e}"))?;
    let options = match p.blksize {
        0 => RequestOptions::default(),
        b => RequestOptions { blksize: Some(b), tsize: true, ..RequestOptions::default() },
    };
    // Three sends of each packet within the timeout, then the silence is the answer.
    let cfg = ClientConfig { timeout: p.timeout / 3, max_retries: 2 };
    let origin = Instant::now();
    let total = p.timeout * TOTAL_TIMEOUTS;
    let now = || Timestamp::from_micros(u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX));
    let mut client = ReadClient::new(now(), options);
    let mut tid: Option<SocketAddr> = None;
    let mut bytes = 0u64;
    let mut server_message = String::new();
    let mut buf = vec![0u8; usize::from(MAX_BLKSIZE) + 4];
    let mut out = [0u8; 1024];
    let outcome = loop {
        while let Some(t) = client.poll_transmit(now(), &cfg) {
            let (n, to) = match t {
                ClientTransmit::Request => {
                    let n = client
                        .encode_request(p.file.as_bytes(), Mode::Octet, &mut out)
                        .map_err(|_| "file name too long")?;
                    (n, server)
                }
                ClientTransmit::Ack(block) => {
                    out[..4].copy_from_slice(&wire::ack(block));
                    (4, tid.unwrap_or(server))
                }
                ClientTransmit::Error { code, message } => {
                    (wire::encode_error(code, message.as_bytes(), &mut out).unwrap_or(0), tid.unwrap_or(server))
                }
            };
            sock.send_to(&out[..n], to).map_err(|e| format!("cannot send to {to}: {e}"))?;
        }
        if let Some(o) = client.outcome() {
            break o;
        }
        let left = total.saturating_sub(origin.elapsed());
        if left.is_zero() {
            return Err(format!("not complete within {} s ({bytes} bytes so far)", secs(total)));
        }
        let wake = client.poll_timeout().unwrap_or(Timestamp::NEVER).saturating_since(now());
        sock.set_read_timeout(Some(wake.min(left).max(Duration::from_millis(1))))
            .map_err(|e| format!("cannot set the socket's timeout: {e}"))?;
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                // The first answer's source is the transfer's port; anything else is not ours.
                if *tid.get_or_insert(from) != from {
                    continue;
                }
                let Ok(packet) = Packet::decode(&buf[..n]) else { continue };
                if let Packet::Error { message, .. } = packet {
                    server_message = String::from_utf8_lossy(message).trim().to_string();
                }
                if let Some((_, data)) = client.handle_packet(now(), &packet, &cfg) {
                    bytes += data.len() as u64;
                }
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                client.handle_timeout(now(), &cfg);
            }
            Err(e) => return Err(format!("cannot receive: {e}")),
        }
    };
    let elapsed = origin.elapsed();
    match outcome {
        ClientOutcome::Complete => {}
        ClientOutcome::ServerError(code) => {
            let name = code.name().map(|n| format!(" {n}")).unwrap_or_default();
            // The server's own words, when they say more than the code's name.
            let said = match server_message.as_str() {
                m if m.is_empty() || code.name().is_some_and(|n| n.eq_ignore_ascii_case(m)) => String::new(),
                m => format!(" (\"{m}\")"),
            };
            return Err(format!("ERROR {}{name}{said}", code.0));
        }
        ClientOutcome::TimedOut if tid.is_none() => return Err(format!("no answer within {} s", secs(p.timeout))),
        ClientOutcome::TimedOut => {
            return Err(format!("the server went silent for {} s after {bytes} bytes", secs(p.timeout)));
        }
        ClientOutcome::ProtocolError(why) => return Err(format!("protocol error: {why} (after {bytes} bytes)")),
    }
    if let Some(t) = client.tsize().filter(|&t| t != bytes) {
        return Err(format!("tsize said {t}, got {bytes} bytes"));
    }
    if let Some(min) = p.min_size.filter(|&m| bytes < m) {
        return Err(format!("got {bytes} bytes, fewer than the minimum {min}"));
    }
    Ok(Success { server, bytes, elapsed })
}

/// Seconds as a person writes them: `2`, `0.5`.
fn secs(d: Duration) -> String {
    format!("{}", d.as_secs_f64())
}

/// The server's address: an IP address alone (port 69), an address with a port (`[::1]:69` for
/// IPv6), or a host name with or without a port; the first address a name resolves to.
fn resolve(addr: &str) -> io::Result<SocketAddr> {
    let bare = addr.strip_prefix('[').and_then(|a| a.strip_suffix(']')).unwrap_or(addr);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, TFTP_PORT));
    }
    let mut found = if addr.contains(':') { addr.to_socket_addrs()? } else { (addr, TFTP_PORT).to_socket_addrs()? };
    found.next().ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
}

impl Success {
    /// The line printed: `ok ADDR FILE N bytes in T ms`.
    pub(crate) fn line(&self, file: &str) -> String {
        format!("ok {} {file} {} bytes in {:.1} ms", self.server, self.bytes, self.elapsed.as_secs_f64() * 1000.0)
    }
}

/// Runs the probe and prints its line; the process's exit status (0 ok, 1 failed).
pub(crate) fn main(p: &Probe) -> std::process::ExitCode {
    match run(p) {
        Ok(s) => {
            println!("{}", s.line(&p.file));
            std::process::ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("probe failed: {} {}: {why}", p.addr, p.file);
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_take_port_69_unless_given() {
        assert_eq!(resolve("192.0.2.1").unwrap(), "192.0.2.1:69".parse().unwrap());
        assert_eq!(resolve("192.0.2.1:6969").unwrap(), "192.0.2.1:6969".parse().unwrap());
        assert_eq!(resolve("::1").unwrap(), "[::1]:69".parse().unwrap());
        assert_eq!(resolve("[::1]").unwrap(), "[::1]:69".parse().unwrap());
        assert_eq!(resolve("[::1]:6969").unwrap(), "[::1]:6969".parse().unwrap());
        assert_eq!(resolve("localhost:6969").unwrap().port(), 6969);
        assert_eq!(resolve("localhost").unwrap().port(), 69);
    }

    #[test]
    fn option_values_are_checked() {
        assert_eq!(parse_timeout("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_timeout("0").is_err() && parse_timeout("61").is_err() && parse_timeout("x").is_err());
        assert_eq!(parse_blksize("0"), Ok(0));
        assert_eq!(parse_blksize("1468"), Ok(1468));
        assert!(parse_blksize("7").is_err() && parse_blksize("65465").is_err());
    }
}
