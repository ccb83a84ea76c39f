//! Which file a read is served from, once its name is resolved (`resolve.rs`): the client's own
//! directory first when `--client-dir` is set, then the shared tree, then, with
//! `--case-insensitive`, the same two searched with case ignored. Each try is one lookup in the
//! file cache (a `statx` when cached, an `openat2` when not), so a name found nowhere (the
//! PXELINUX and GRUB search chains) costs one `openat2` without views and two with them; the
//! case-insensitive search, a directory read per component, runs only after both missed.
//!
//! Writes never go to views and are never searched with case ignored: an upload lands where
//! its resolved name says.

use std::net::IpAddr;
use std::rc::Rc;

use tracing::debug;

use super::Engine;
use super::resolve::{Decided, Lookup, Refused};
use crate::config::{ClientDir, LookupPolicy};
use crate::fs::{FileCache, FileVersion, OpenError, PathError, normalize};
use crate::proto::Timestamp;
use crate::proto::wire::MAX_FILENAME_LEN;
use crate::server::stats::{Counter, Counters};

/// How long a hardware address read from the neighbour table is used before it is read again.
const MAC_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// Hardware addresses most recently read, per client address.
const MAC_ENTRIES: usize = 256;

/// A worker's recent answers of the neighbour table: a PXE client asks for a dozen names in a
/// second, and each needs its MAC for a `{mac}` view. Only addresses found are kept.
pub(super) struct Macs {
    entries: Vec<(IpAddr, [u8; 6], Timestamp)>,
    /// Where addresses come from: the kernel's table, asked for an address on an interface
    /// (tests give another).
    source: fn(IpAddr, u32) -> Option<[u8; 6]>,
}

impl Default for Macs {
    fn default() -> Self {
        Self { entries: Vec::new(), source: crate::sys::neigh::mac_of }
    }
}

impl std::fmt::Debug for Macs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Macs").field("entries", &self.entries.len()).finish()
    }
}

impl Macs {
    /// The hardware address of `ip`, seen on interface `ifindex` (0: unknown), if the neighbour
    /// table has one.
    fn get(&mut self, ip: IpAddr, ifindex: u32, now: Timestamp) -> Option<[u8; 6]> {
        if let Some(e) = self.entries.iter().find(|e| e.0 == ip && now.saturating_since(e.2) < MAC_TTL) {
            return Some(e.1);
        }
        let mac = (self.source)(ip, ifindex)?;
        self.entries.retain(|e| e.0 != ip && now.saturating_since(e.2) < MAC_TTL);
        if self.entries.len() >= MAC_ENTRIES {
            self.entries.remove(0);
        }
        self.entries.push((ip, mac, now));
        Some(mac)
    }

    /// Addresses from `source` instead of the kernel.
    #[cfg(test)]
    pub(super) fn set_source(&mut self, source: fn(IpAddr, u32) -> Option<[u8; 6]>) {
        self.source = source;
        self.entries.clear();
    }
}

/// Why a read found no file to serve.
pub(super) enum Unserved {
    /// The file system's answer.
    Open(OpenError),
    /// A map file rule refused the name.
    Rule(Option<String>),
}

impl Engine {
    /// The file a read of `lookup` is served from, and what decided it.
    pub(super) fn find_file(
        &mut self,
        lookup: &Lookup<'_>,
        now: Timestamp,
    ) -> Result<(Rc<FileVersion>, Decided), Unserved> {
        let names = &self.policy.lookup;
        let files = &self.files;
        let mut decided = Decided::default();
        let resolved =
            self.resolver.resolve(lookup, names, &mut |rel| files.is_servable(rel), &mut decided, &mut self.path);
        self.decided = decided;
        if resolved.is_err() {
            count(&self.counters, &decided);
        }
        let rel = match resolved {
            Ok(rel) => rel,
            Err(Refused::Path(PathError::Empty)) => return Err(Unserved::Open(OpenError::NotFound)),
            Err(Refused::Path(_)) => return Err(Unserved::Open(OpenError::Denied)),
            Err(Refused::Rule { message, rule }) => {
                self.counters.add(Counter::NamesDenied, 1);
                debug!(worker = self.worker, client = %lookup.peer, rule, "name refused by a map file rule");
                return Err(Unserved::Rule(message));
            }
        };
        self.resolved = rel.len();
        if !names.is_active() {
            return self.files.get(rel, now).map(|f| (f, decided)).map_err(Unserved::Open);
        }
        let view = match &names.client_dir {
            Some(dir) => {
                let ifindex = lookup.local.map_or(0, |l| l.ifindex);
                let mac = dir.needs_mac().then(|| self.macs.get(lookup.peer.ip(), ifindex, now)).flatten();
                view_path(dir, lookup.peer.ip(), mac, rel, &mut self.view)
            }
            None => None,
        };
        let found = open_layers(&mut self.files, view, rel, names, &mut self.found, now);
        if let Ok((_, how)) = &found {
            decided.view = how.view;
            decided.case = how.case;
        }
        self.decided = decided;
        count(&self.counters, &decided);
        if decided.is_some() {
            debug!(worker = self.worker, client = %lookup.peer, lookup = %decided, "name looked up");
        }
        found.map(|(f, _)| (f, decided)).map_err(Unserved::Open)
    }
}

/// Counts what decided a name.
pub(super) fn count(c: &Counters, d: &Decided) {
    if d.rule.is_some() {
        c.add(Counter::NamesRewritten, 1);
    }
    if d.trimmed || d.prefix {
        c.add(Counter::NamesFixed, 1);
    }
    if d.view {
        c.add(Counter::ClientViews, 1);
    }
    if d.case {
        c.add(Counter::CaseFixed, 1);
    }
}

/// `rel` inside the client's directory, normalised into `out`; `None` when the client has no
/// directory (no hardware address) or the path does not fit.
fn view_path<'o>(
    dir: &ClientDir,
    ip: IpAddr,
    mac: Option<[u8; 6]>,
    rel: &[u8],
    out: &'o mut [u8; MAX_FILENAME_LEN],
) -> Option<&'o [u8]> {
    let mut joined = [0u8; 2 * MAX_FILENAME_LEN];
    let d = dir.expand(ip, mac, &mut joined[..MAX_FILENAME_LEN])?.len();
    joined[d] = b'/';
    joined[d + 1..d + 1 + rel.len()].copy_from_slice(rel);
    normalize(&joined[..d + 1 + rel.len()], out).ok()
}

/// The file at `view` (the client's), else at `rel` (shared), else either found with case
/// ignored when that is on; a file that exists but cannot be served is that refusal.
fn open_layers(
    files: &mut FileCache,
    view: Option<&[u8]>,
    rel: &[u8],
    names: &LookupPolicy,
    scratch: &mut [u8; MAX_FILENAME_LEN],
    now: Timestamp,
) -> Result<(Rc<FileVersion>, Decided), OpenError> {
    let how = |view, case| Decided { view, case, ..Decided::default() };
    if let Some(v) = view {
        match files.get(v, now) {
            Err(OpenError::NotFound) => {}
            other => return other.map(|f| (f, how(true, false))),
        }
    }
    let shared = files.get(rel, now);
    if !matches!(shared, Err(OpenError::NotFound)) || !names.case_insensitive {
        return shared.map(|f| (f, how(false, false)));
    }
    for (path, in_view) in view.map(|v| (v, true)).into_iter().chain([(rel, false)]) {
        match files.find_case_insensitive(path, scratch) {
            Ok(found) => return files.get(found, now).map(|f| (f, how(in_view, true))),
            Err(OpenError::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Err(OpenError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_paths_are_normalised_beneath_the_client_directory() {
        let mut out = [0; MAX_FILENAME_LEN];
        let dir = ClientDir::new("/clients//{ip}/").unwrap();
        let ip = "198.18.0.2".parse().unwrap();
        assert_eq!(
            view_path(&dir, ip, None, b"pxelinux.cfg/default", &mut out).unwrap(),
            b"clients/198.18.0.2/pxelinux.cfg/default"
        );
        let mac = ClientDir::new("{mac}").unwrap();
        assert_eq!(view_path(&mac, ip, None, b"x", &mut out), None);
        let long = [b'a'; MAX_FILENAME_LEN - 4];
        assert_eq!(view_path(&dir, ip, None, &long, &mut out), None, "too long for a name");
    }

    #[test]
    fn found_addresses_are_kept_for_a_while() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        fn source(ip: IpAddr, _ifindex: u32) -> Option<[u8; 6]> {
            CALLS.fetch_add(1, Ordering::Relaxed);
            (ip.to_string() == "198.18.0.2").then_some([2, 0, 0, 0, 0, 2])
        }
        let mut m = Macs::default();
        m.set_source(source);
        let t0 = Timestamp::from_micros(1_000_000);
        let ip: IpAddr = "198.18.0.2".parse().unwrap();
        assert_eq!(m.get(ip, 2, t0), Some([2, 0, 0, 0, 0, 2]));
        assert_eq!(m.get(ip, 2, t0 + std::time::Duration::from_secs(1)), Some([2, 0, 0, 0, 0, 2]));
        assert_eq!(CALLS.load(Ordering::Relaxed), 1);
        assert_eq!(m.get(ip, 2, t0 + MAC_TTL), Some([2, 0, 0, 0, 0, 2]));
        assert_eq!(CALLS.load(Ordering::Relaxed), 2, "read again once old");
        assert_eq!(m.get("198.18.0.3".parse().unwrap(), 2, t0), None);
        assert_eq!(m.entries.len(), 1, "misses are not kept");
    }
}
