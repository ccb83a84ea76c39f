//! Which file a request names: the one place between a request's filename and the file system.
//!
//! [`Resolve`] turns the name the client sent into a path relative to the root: the map file's
//! rules, then the name fixes, then normalisation (see `docs/names.md`). Which of the paths it
//! leads to is opened (the client's view, the shared tree, the case-insensitive search) is
//! `lookup.rs`'s, since that needs the file cache. With every lookup setting off, a name is only
//! normalised, as it always was, without allocating.

use std::fmt;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::config::LookupPolicy;
use crate::fs::{PathError, Root, normalize};
use crate::proto::wire::MAX_FILENAME_LEN;
use crate::remap::{Client, Rewrite};
use crate::server::socket::LocalEnd;

/// A request's filename and where it came from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lookup<'a> {
    /// The filename as the request carries it.
    pub(crate) filename: &'a [u8],
    /// The client.
    pub(crate) peer: SocketAddr,
    /// The address the request was sent to and the interface it came in on, when known.
    pub(crate) local: Option<LocalEnd>,
    /// A write request (a map file's `P` rules apply, `G` rules do not).
    pub(crate) write: bool,
}

/// What made the path served differ from the name as sent: for the log (`lookup=`) and the
/// counters. All false and no rule: the name only normalised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Decided {
    /// The line of the map file rule that last rewrote the name.
    pub(crate) rule: Option<u32>,
    /// Trailing garbage was trimmed (`--trim-name-garbage`).
    pub(crate) trimmed: bool,
    /// A `--strip-prefix` was taken off.
    pub(crate) prefix: bool,
    /// Served from the client's own directory (`--client-dir`).
    pub(crate) view: bool,
    /// Found with case ignored (`--case-insensitive`).
    pub(crate) case: bool,
}

impl Decided {
    /// Whether anything but normalisation decided.
    pub(crate) fn is_some(&self) -> bool {
        *self != Self::default()
    }
}

/// `rule:12+trim+prefix+view+case`, the parts that apply, in the order they applied.
impl fmt::Display for Decided {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if let Some(rule) = self.rule {
            write!(f, "rule:{rule}")?;
            sep = "+";
        }
        for (on, name) in [(self.trimmed, "trim"), (self.prefix, "prefix"), (self.view, "view"), (self.case, "case")] {
            if on {
                write!(f, "{sep}{name}")?;
                sep = "+";
            }
        }
        Ok(())
    }
}

/// Why a name names no file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Empty, `..`, a control character, too long.
    Path(PathError),
    /// A map file rule refused it (ERROR 2, with the rule's message when it has one).
    Rule {
        /// The ERROR's message; `None`: the server's own for an access violation.
        message: Option<String>,
        /// The line of the rule.
        rule: usize,
    },
}

/// Turns a request's filename into the path to open, relative to the root (the file cache's
/// for reads, the upload directory for writes).
pub(crate) trait Resolve {
    /// The relative path `lookup` names under `names`, written into `out`, or why it names
    /// none; what decided it in `decided` either way (a rule may rewrite a name that is then
    /// refused). `servable` says whether a relative path names a file that would be served:
    /// what a map file's `E` rule asks.
    fn resolve<'o>(
        &self,
        lookup: &Lookup<'_>,
        names: &LookupPolicy,
        servable: &mut dyn FnMut(&[u8]) -> bool,
        decided: &mut Decided,
        out: &'o mut [u8; MAX_FILENAME_LEN],
    ) -> Result<&'o [u8], Refused>;
}

/// Every client sees the one root: the filename normalised (see [`normalize`]), after the
/// root's own absolute path is taken off it.
///
/// A DHCP server's file name is sometimes the full path of the file on the TFTP server
/// (`/srv/tftp/pxelinux.0` when the root is `/srv/tftp`), which dnsmasq and tftpd-hpa's `-s`
/// accept. A filename that starts with one of the root's absolute paths (as given at start, or
/// canonical) followed by `/` is read from beneath that prefix; any other name is what it was:
/// a leading `/` is dropped and the rest resolved beneath the root. Either way the result is
/// normalised, so no prefix lets a name climb out (`/srv/tftp/../etc` is still refused).
///
/// Uploads go through the same resolver, so a WRQ for `/srv/tftp/x` writes `x`: a name a client
/// reads and writes means one file. With a separate upload directory the root's path is still
/// the one taken off (the name is then resolved beneath the upload directory, as every name is).
///
/// With a [`LookupPolicy`] in force, the map file's rules run first, on the name as sent (a
/// rule's result goes through everything that follows, so no rule leads outside the root);
/// trailing garbage is trimmed, the name normalised, and a `--strip-prefix` taken off.
#[derive(Clone, Debug, Default)]
pub(crate) struct OneRoot {
    /// The root's absolute paths without trailing `/`, longest first; none for `/` itself.
    prefixes: Vec<Box<[u8]>>,
}

impl OneRoot {
    /// The resolver for `root`, which takes off the paths it is known by ([`Root::paths`]).
    pub(crate) fn new(root: &Root) -> Self {
        Self::known_as(root.paths().iter().map(|p| p.as_path()))
    }

    /// The resolver for a root known by `paths` (absolute).
    fn known_as<'p>(paths: impl IntoIterator<Item = &'p Path>) -> Self {
        let mut prefixes: Vec<Box<[u8]>> = paths
            .into_iter()
            .filter_map(|p| {
                let b = p.as_os_str().as_bytes();
                let end = b.iter().rposition(|&c| c != b'/').map_or(0, |i| i + 1);
                (end > 0 && b.starts_with(b"/")).then(|| Box::from(&b[..end]))
            })
            .collect();
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.len()));
        prefixes.dedup();
        Self { prefixes }
    }

    /// `filename` with the root's path taken off when it starts with one followed by `/`.
    fn beneath_root<'n>(&self, filename: &'n [u8]) -> &'n [u8] {
        for p in &self.prefixes {
            if let Some(rest) = filename.strip_prefix(&**p) {
                if rest.first() == Some(&b'/') {
                    return rest;
                }
            }
        }
        filename
    }

    /// The name fixes and normalisation, after the rules: `name` trimmed, normalised into
    /// `out`, a configured prefix taken off.
    fn fix<'o>(
        &self,
        name: &[u8],
        names: &LookupPolicy,
        decided: &mut Decided,
        out: &'o mut [u8; MAX_FILENAME_LEN],
    ) -> Result<&'o [u8], PathError> {
        let mut name = name;
        if names.trim_garbage {
            let kept = trim_garbage(name);
            decided.trimmed = kept.len() < name.len();
            name = kept;
        }
        let len = normalize(self.beneath_root(name), out)?.len();
        let kept = names.strip_prefixes.iter().find_map(|p| p.strip(&out[..len])).map(<[u8]>::len);
        match kept {
            Some(kept) => {
                decided.prefix = true;
                out.copy_within(len - kept..len, 0);
                Ok(&out[..kept])
            }
            None => Ok(&out[..len]),
        }
    }
}

/// `name` without the bytes some NIC ROMs append after it: 0xFF, DEL and NUL at its end.
pub(crate) fn trim_garbage(name: &[u8]) -> &[u8] {
    let end = name.iter().rposition(|&b| !matches!(b, 0xff | 0x7f | 0)).map_or(0, |i| i + 1);
    &name[..end]
}

impl Resolve for OneRoot {
    fn resolve<'o>(
        &self,
        lookup: &Lookup<'_>,
        names: &LookupPolicy,
        servable: &mut dyn FnMut(&[u8]) -> bool,
        decided: &mut Decided,
        out: &'o mut [u8; MAX_FILENAME_LEN],
    ) -> Result<&'o [u8], Refused> {
        *decided = Decided::default();
        let Some(map) = &names.map_file else {
            return self.fix(lookup.filename, names, decided, out).map_err(Refused::Path);
        };
        let client = Client { addr: lookup.peer.ip(), write: lookup.write };
        let usable = |n: &[u8]| {
            let mut tmp = [0; MAX_FILENAME_LEN];
            self.fix(n, names, &mut Decided::default(), &mut tmp).is_ok_and(&mut *servable)
        };
        let rewritten = match map.rules().rewrite_checked(lookup.filename, &client, usable) {
            Rewrite::Unchanged => None,
            Rewrite::Name { name, rule } => {
                decided.rule = Some(u32::try_from(rule).unwrap_or(u32::MAX));
                Some(name)
            }
            Rewrite::Denied { message, rule } => return Err(Refused::Rule { message, rule }),
        };
        let name = rewritten.as_deref().unwrap_or(lookup.filename);
        self.fix(name, names, decided, out).map_err(Refused::Path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(r: &OneRoot, name: &[u8]) -> Result<Vec<u8>, PathError> {
        match resolve_with(r, &LookupPolicy::default(), name) {
            Ok((rel, d)) => {
                assert!(!d.is_some());
                Ok(rel)
            }
            Err(Refused::Path(e)) => Err(e),
            Err(e) => panic!("{e:?}"),
        }
    }

    fn resolve_with(r: &OneRoot, names: &LookupPolicy, name: &[u8]) -> Result<(Vec<u8>, Decided), Refused> {
        let peer = "192.0.2.10:2000".parse().unwrap();
        let mut out = [0; MAX_FILENAME_LEN];
        let lookup = Lookup { filename: name, peer, local: None, write: false };
        let mut d = Decided::default();
        r.resolve(&lookup, names, &mut |_| false, &mut d, &mut out).map(|rel| (rel.to_vec(), d))
    }

    fn decided(s: &str) -> Decided {
        let mut d = Decided::default();
        for part in s.split('+').filter(|p| !p.is_empty()) {
            match part {
                "trim" => d.trimmed = true,
                "prefix" => d.prefix = true,
                "view" => d.view = true,
                "case" => d.case = true,
                rule => d.rule = Some(rule.strip_prefix("rule:").unwrap().parse().unwrap()),
            }
        }
        assert_eq!(d.to_string(), s);
        d
    }

    /// The fixes apply only when on, each says so, and rules run first on the name as sent.
    #[test]
    fn fixes_and_rules_in_order() {
        use crate::config::{MapFile, StripPrefix};
        let r = OneRoot::known_as([Path::new("/srv/tftp")]);
        let off = LookupPolicy::default();
        let ok = |rel: &str, d: &str| Ok((rel.as_bytes().to_vec(), decided(d)));
        assert_eq!(resolve_with(&r, &off, b"pxelinux.0\xff"), Ok((b"pxelinux.0\xff".to_vec(), Decided::default())));
        assert_eq!(resolve_with(&r, &off, b"pxelinux.0\x7f"), Err(Refused::Path(PathError::ControlCharacter)));
        let fixes = LookupPolicy {
            trim_garbage: true,
            strip_prefixes: vec![StripPrefix::new("/tftpboot/").unwrap(), StripPrefix::new("boot").unwrap()],
            ..Default::default()
        };
        assert_eq!(resolve_with(&r, &fixes, b"pxelinux.0\xff\x7f\xff"), ok("pxelinux.0", "trim"));
        assert_eq!(resolve_with(&r, &fixes, b"/tftpboot//pxelinux.0"), ok("pxelinux.0", "prefix"));
        assert_eq!(resolve_with(&r, &fixes, b"\\tftpboot\\efi\\grubx64.efi"), ok("efi/grubx64.efi", "prefix"));
        assert_eq!(resolve_with(&r, &fixes, b"/srv/tftp/boot/x\xff"), ok("x", "trim+prefix"));
        assert_eq!(resolve_with(&r, &fixes, b"tftpboot"), ok("tftpboot", ""), "the prefix alone is a name");
        assert_eq!(resolve_with(&r, &fixes, b"\xff\xff"), Err(Refused::Path(PathError::Empty)));
        assert_eq!(resolve_with(&r, &fixes, b"tftpboot/../x"), Err(Refused::Path(PathError::ParentComponent)));
        let map = MapFile::parse(
            Path::new("map"),
            b"a ^secret.* Go\\ away\nr ^/tftpboot/ /\nr ^esc ../../etc/passwd\nrg \\\\ /\n".to_vec(),
        )
        .unwrap();
        let rules = LookupPolicy { map_file: Some(map), ..fixes };
        assert_eq!(resolve_with(&r, &rules, b"/tftpboot/pxelinux.0"), ok("pxelinux.0", "rule:2"));
        assert_eq!(resolve_with(&r, &rules, b"boot\\x\\y"), ok("x/y", "rule:4+prefix"));
        assert_eq!(
            resolve_with(&r, &rules, b"secret/x"),
            Err(Refused::Rule { message: Some("Go away".into()), rule: 1 })
        );
        assert_eq!(resolve_with(&r, &rules, b"esc"), Err(Refused::Path(PathError::ParentComponent)), "no way out");
        assert_eq!(trim_garbage(b"a\0\xff"), b"a");
    }

    #[test]
    fn one_root_normalises_and_refuses_escapes() {
        let r = OneRoot::default();
        assert_eq!(resolve(&r, b"/boot//x.efi"), Ok(b"boot/x.efi".to_vec()));
        assert_eq!(resolve(&r, b"../etc/passwd"), Err(PathError::ParentComponent));
        assert_eq!(resolve(&r, b"/"), Err(PathError::Empty));
    }

    /// dnsmasq's habit: the DHCP file name is the full path on the server. It names the file
    /// beneath the root; anything else keeps today's meaning.
    #[test]
    fn absolute_path_inside_the_root_names_the_file_beneath_it() {
        let r = OneRoot::known_as([Path::new("/srv/tftp/"), Path::new("/data/tftp")]);
        assert_eq!(resolve(&r, b"/srv/tftp/pxelinux.0"), Ok(b"pxelinux.0".to_vec()));
        assert_eq!(resolve(&r, b"/srv/tftp/efi64//grubx64.efi"), Ok(b"efi64/grubx64.efi".to_vec()));
        assert_eq!(resolve(&r, b"/data/tftp/pxelinux.0"), Ok(b"pxelinux.0".to_vec()), "the canonical path");
        // Not the root's path followed by `/`: a leading `/` dropped, as before.
        assert_eq!(resolve(&r, b"/srv/tftpx/pxelinux.0"), Ok(b"srv/tftpx/pxelinux.0".to_vec()));
        assert_eq!(resolve(&r, b"srv/tftp/pxelinux.0"), Ok(b"srv/tftp/pxelinux.0".to_vec()), "relative");
        assert_eq!(resolve(&r, b"/srv/tftp"), Ok(b"srv/tftp".to_vec()));
        assert_eq!(resolve(&r, b"/other/pxelinux.0"), Ok(b"other/pxelinux.0".to_vec()));
        assert_eq!(resolve(&r, b"pxelinux.0"), Ok(b"pxelinux.0".to_vec()));
        // Still normalised after the prefix: no way out.
        assert_eq!(resolve(&r, b"/srv/tftp/../etc/passwd"), Err(PathError::ParentComponent));
        assert_eq!(resolve(&r, b"/srv/tftp/"), Err(PathError::Empty));
        // The file system's root is never a prefix (the configuration refuses it anyway).
        assert_eq!(OneRoot::known_as([Path::new("/")]).prefixes.len(), 0);
    }

    /// The paths come from the opened root: as given and canonical.
    #[test]
    fn root_known_by_the_path_given_and_its_canonical_path() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        let given = dir.path().join("link/.");
        let r = OneRoot::new(&Root::open(&given, true).unwrap());
        let name = |p: &Path| [p.as_os_str().as_bytes(), b"/pxelinux.0"].concat();
        let canonical = std::fs::canonicalize(&real).unwrap();
        assert_eq!(resolve(&r, &name(&dir.path().join("link"))), Ok(b"pxelinux.0".to_vec()));
        assert_eq!(resolve(&r, &name(&canonical)), Ok(b"pxelinux.0".to_vec()));
    }
}
