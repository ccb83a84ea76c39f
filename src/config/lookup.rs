//! How a request's filename becomes a file: the map file's rules, the name fixes and the
//! per-client views (`docs/names.md`). Part of the serving policy, so a reload replaces it.
//!
//! Everything here is off by default, and a request then costs what it cost without it.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::ConfigError;
use crate::remap::{RemapError, Rules};

/// How filenames are looked up: every setting off by default.
///
/// The order (see `docs/names.md`): the map file's rules on the name as the client sent it;
/// trailing garbage trimmed; the name normalised (`\` to `/`, leading and repeated slashes
/// dropped, `..` refused); a configured prefix taken off; the client's view tried before the
/// shared tree; the case-insensitive search only when the exact name is found in neither.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LookupPolicy {
    /// tftp-hpa rules run on each name as the client sent it (`--map-file FILE`, in.tftpd's
    /// `-m`).
    pub map_file: Option<MapFile>,
    /// A name not found as spelled is looked for with ASCII case ignored, component by
    /// component, and served as it is named on disk (`--case-insensitive`).
    pub case_insensitive: bool,
    /// Leading directories taken off a name that starts with one of them, compared after
    /// normalisation (`--strip-prefix PREFIX`, repeatable: `/tftpboot/` makes `/tftpboot/x`
    /// and `x` the same file). The first that matches is taken off.
    pub strip_prefixes: Vec<StripPrefix>,
    /// Bytes some NIC ROMs append after the name (0xFF, DEL, NUL) are dropped from its end
    /// (`--trim-name-garbage`). Off by default: a name ending in 0xFF names another file on
    /// a Linux file system, however unlikely one is.
    pub trim_garbage: bool,
    /// Each client's own directory beneath the root, tried before the shared tree for reads
    /// (`--client-dir TEMPLATE`, e.g. `clients/{mac}`).
    pub client_dir: Option<ClientDir>,
}

impl LookupPolicy {
    /// Whether any setting is on: otherwise a name is only normalised, as it always was.
    pub fn is_active(&self) -> bool {
        self.map_file.is_some()
            || self.case_insensitive
            || !self.strip_prefixes.is_empty()
            || self.trim_garbage
            || self.client_dir.is_some()
    }

    /// The settings that differ between `self` and `other`, by command-line flag.
    pub(super) fn differences(&self, other: &LookupPolicy) -> impl Iterator<Item = (bool, &'static str)> {
        // Destructured whole, so that a field added here must be given its name below.
        let LookupPolicy { map_file, case_insensitive, strip_prefixes, trim_garbage, client_dir } = self;
        [
            (*map_file != other.map_file, "--map-file"),
            (*case_insensitive != other.case_insensitive, "--case-insensitive"),
            (*strip_prefixes != other.strip_prefixes, "--strip-prefix"),
            (*trim_garbage != other.trim_garbage, "--trim-name-garbage"),
            (*client_dir != other.client_dir, "--client-dir"),
        ]
        .into_iter()
    }
}

/// A map file and its rules. Two are equal when they were read from the same path with the
/// same contents, so that a reload after the file changed reports `--map-file` as changed.
#[derive(Clone)]
pub struct MapFile {
    path: PathBuf,
    text: Arc<[u8]>,
    rules: Arc<Rules>,
}

impl MapFile {
    /// Reads and parses the map file at `path`.
    pub fn load(path: &Path) -> Result<Self, RemapError> {
        let text = std::fs::read(path).map_err(|source| RemapError::Read { path: path.to_path_buf(), source })?;
        Self::parse(path, text)
    }

    /// Parses `text` as the map file at `path` (which is only a name here).
    pub fn parse(path: &Path, text: Vec<u8>) -> Result<Self, RemapError> {
        let rules = Rules::parse(&text)?;
        Ok(Self { path: path.to_path_buf(), text: text.into(), rules: Arc::new(rules) })
    }

    /// Where it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its rules.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }
}

impl PartialEq for MapFile {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.text == other.text
    }
}

impl fmt::Debug for MapFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapFile").field("path", &self.path).field("rules", &self.rules.len()).finish()
    }
}

/// A leading directory to take off names: its components, joined by `/`, as a normalised name
/// would start with them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StripPrefix(Box<[u8]>);

impl StripPrefix {
    /// `prefix` (`/tftpboot/`, `tftpboot`, `boot\efi`): separators as in names, `.` and empty
    /// components dropped. Refused when nothing is left, or with a `..` or a control character.
    pub fn new(prefix: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::StripPrefix(prefix.to_string());
        let mut out = [0; crate::proto::wire::MAX_FILENAME_LEN];
        let norm = crate::fs::normalize(prefix.as_bytes(), &mut out).map_err(|_| bad())?;
        Ok(Self(norm.into()))
    }

    /// `rel` (normalised) without this prefix and the `/` after it, when it starts with both.
    pub fn strip<'n>(&self, rel: &'n [u8]) -> Option<&'n [u8]> {
        rel.strip_prefix(&*self.0)?.strip_prefix(b"/")
    }

    /// The prefix as compared.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The template of each client's directory beneath the root: text with `{ip}` (the client's
/// address: dotted quad, or IPv6 text), `{hexip}` (IPv4 as 8 upper-case hex digits, as
/// PXELINUX and tftp-hpa's `\x` write it; IPv6 as 32) and `{mac}` (the client's hardware
/// address from the kernel's neighbour table, lower-case hex with dashes, `52-54-00-12-34-56`,
/// as dnsmasq's `--tftp-unique-root=mac` and PXELINUX's `01-` names write it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientDir {
    template: String,
    mac: bool,
}

/// One piece of a [`ClientDir`] template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Text as it is.
    Text(&'a str),
    /// `{ip}`.
    Ip,
    /// `{hexip}`.
    HexIp,
    /// `{mac}`.
    Mac,
}

impl ClientDir {
    /// Parses `template`: at least one of `{ip}`, `{hexip}`, `{mac}`, no other `{`/`}`, no
    /// `..` component, no control character.
    pub fn new(template: &str) -> Result<Self, ConfigError> {
        let bad = |why: &'static str| ConfigError::ClientDir { template: template.to_string(), why };
        let mut placeholders = 0;
        let mut mac = false;
        for piece in Pieces(template) {
            match piece {
                None => return Err(bad("only {ip}, {hexip} and {mac} are replaced")),
                Some(Piece::Text(t)) => {
                    if t.bytes().any(|b| b < 0x20 || b == 0x7f) {
                        return Err(bad("a control character"));
                    }
                    if t.split(['/', '\\']).any(|c| c == "..") {
                        return Err(bad("a `..` component"));
                    }
                }
                Some(p) => {
                    placeholders += 1;
                    mac |= p == Piece::Mac;
                }
            }
        }
        if placeholders == 0 {
            return Err(bad("no {ip}, {hexip} or {mac}"));
        }
        Ok(Self { template: template.to_string(), mac })
    }

    /// The template as given.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// Whether it needs the client's hardware address.
    pub fn needs_mac(&self) -> bool {
        self.mac
    }

    /// Its pieces in order.
    pub fn pieces(&self) -> impl Iterator<Item = Piece<'_>> {
        Pieces(&self.template).map_while(|p| p)
    }

    /// Writes the directory of the client at `ip` with hardware address `mac` into `out`;
    /// `None` when the template needs a hardware address and there is none (a relayed
    /// client), or when it does not fit.
    pub fn expand<'o>(&self, ip: IpAddr, mac: Option<[u8; 6]>, out: &'o mut [u8]) -> Option<&'o [u8]> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let mut w = Cursor { buf: out, len: 0 };
        for piece in self.pieces() {
            let ok = match piece {
                Piece::Text(t) => w.put(t.as_bytes()),
                Piece::Ip => fmt::write(&mut w, format_args!("{ip}")).is_ok(),
                Piece::HexIp => match ip {
                    IpAddr::V4(v4) => fmt::write(&mut w, format_args!("{:08X}", u32::from(v4))).is_ok(),
                    IpAddr::V6(v6) => fmt::write(&mut w, format_args!("{:032X}", u128::from(v6))).is_ok(),
                },
                Piece::Mac => {
                    let m = mac?;
                    fmt::write(
                        &mut w,
                        format_args!("{:02x}-{:02x}-{:02x}-{:02x}-{:02x}-{:02x}", m[0], m[1], m[2], m[3], m[4], m[5]),
                    )
                    .is_ok()
                }
            };
            if !ok {
                return None;
            }
        }
        let len = w.len;
        Some(&out[..len])
    }
}

/// Writes into a byte buffer, failing when full.
struct Cursor<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Cursor<'_> {
    fn put(&mut self, b: &[u8]) -> bool {
        let Some(dst) = self.buf.get_mut(self.len..self.len + b.len()) else { return false };
        dst.copy_from_slice(b);
        self.len += b.len();
        true
    }
}

impl fmt::Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.put(s.as_bytes()) { Ok(()) } else { Err(fmt::Error) }
    }
}

/// The pieces of a template; `None` for a brace that opens no known placeholder.
struct Pieces<'a>(&'a str);

impl<'a> Iterator for Pieces<'a> {
    type Item = Option<Piece<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        for (text, piece) in [("{ip}", Piece::Ip), ("{hexip}", Piece::HexIp), ("{mac}", Piece::Mac)] {
            if let Some(rest) = self.0.strip_prefix(text) {
                self.0 = rest;
                return Some(Some(piece));
            }
        }
        if self.0.starts_with(['{', '}']) {
            self.0 = "";
            return Some(None);
        }
        let end = self.0.find(['{', '}']).unwrap_or(self.0.len());
        let (text, rest) = self.0.split_at(end);
        self.0 = rest;
        Some(Some(Piece::Text(text)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(t: &str, ip: &str, mac: Option<[u8; 6]>) -> Option<String> {
        let mut out = [0; 128];
        ClientDir::new(t).unwrap().expand(ip.parse().unwrap(), mac, &mut out).map(|b| String::from_utf8_lossy(b).into())
    }

    #[test]
    fn templates_expand_as_pxelinux_and_dnsmasq_write_addresses() {
        let mac = Some([0x52, 0x54, 0x00, 0xAB, 0x0c, 0x01]);
        assert_eq!(expand("clients/{ip}", "192.0.2.91", None).unwrap(), "clients/192.0.2.91");
        assert_eq!(expand("{hexip}", "192.0.2.91", None).unwrap(), "C000025B");
        assert_eq!(expand("{hexip}", "::ffff:192.0.2.91", None).unwrap(), "C000025B", "a mapped IPv4 client");
        assert_eq!(expand("v/{ip}", "2001:db8::1", None).unwrap(), "v/2001:db8::1");
        assert_eq!(expand("{hexip}", "2001:db8::1", None).unwrap(), "20010DB8000000000000000000000001");
        assert_eq!(expand("m/{mac}/x", "192.0.2.91", mac).unwrap(), "m/52-54-00-ab-0c-01/x");
        assert_eq!(expand("m/{mac}", "192.0.2.91", None), None, "a relayed client has no view");
        let mut small = [0; 4];
        assert_eq!(ClientDir::new("{ip}").unwrap().expand("192.0.2.91".parse().unwrap(), None, &mut small), None);
    }

    #[test]
    fn bad_templates_and_prefixes_are_refused() {
        for t in ["clients", "{IP}", "{ip", "x/{ip}/../y", "{ip}}", "a\x01{ip}"] {
            assert!(matches!(ClientDir::new(t), Err(ConfigError::ClientDir { .. })), "{t}");
        }
        assert!(ClientDir::new("{mac}").unwrap().needs_mac());
        assert!(!ClientDir::new("c/{ip}-{hexip}").unwrap().needs_mac());
        for p in ["", "/", "..", "a/../b"] {
            assert_eq!(StripPrefix::new(p), Err(ConfigError::StripPrefix(p.to_string())), "{p}");
        }
        let p = StripPrefix::new("//tftpboot/").unwrap();
        assert_eq!(p.as_bytes(), b"tftpboot");
        assert_eq!(p.strip(b"tftpboot/pxelinux.0"), Some(&b"pxelinux.0"[..]));
        assert_eq!(p.strip(b"tftpbootx/pxelinux.0"), None);
        assert_eq!(p.strip(b"tftpboot"), None);
    }

    #[test]
    fn map_files_are_equal_by_path_and_contents() {
        let a = MapFile::parse(Path::new("/m"), b"r ^/tftpboot/ /\n".to_vec()).unwrap();
        let b = MapFile::parse(Path::new("/m"), b"r ^/tftpboot/ /\n".to_vec()).unwrap();
        let c = MapFile::parse(Path::new("/m"), b"r ^/boot/ /\n".to_vec()).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let on = LookupPolicy { map_file: Some(a), ..Default::default() };
        let names: Vec<_> = on.differences(&LookupPolicy::default()).filter(|d| d.0).map(|d| d.1).collect();
        assert_eq!(names, ["--map-file"]);
        assert!(on.is_active() && !LookupPolicy::default().is_active());
    }
}
