//! Which file a request names: the one place between a request's filename and the file system.
//!
//! Today every request is served from one root ([`OneRoot`]); per-client views and remap rules
//! would be other implementations of [`Resolve`], which is why it sees the client's and the
//! local address.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::fs::{PathError, Root, normalize};
use crate::proto::wire::MAX_FILENAME_LEN;

/// A request's filename and where it came from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lookup<'a> {
    /// The filename as the request carries it.
    pub(crate) filename: &'a [u8],
    /// The client.
    #[allow(dead_code, reason = "for resolvers that give clients their own views")]
    pub(crate) peer: SocketAddr,
    /// The address the request was sent to, when known.
    #[allow(dead_code, reason = "for resolvers that give clients their own views")]
    pub(crate) local: Option<IpAddr>,
}

/// Turns a request's filename into the path to open, relative to the root (the file cache's
/// for reads, the upload directory for writes).
pub(crate) trait Resolve {
    /// The relative path `lookup` names, written into `out`, or why it names none.
    fn resolve<'o>(&self, lookup: &Lookup<'_>, out: &'o mut [u8; MAX_FILENAME_LEN]) -> Result<&'o [u8], PathError>;
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
}

impl Resolve for OneRoot {
    fn resolve<'o>(&self, lookup: &Lookup<'_>, out: &'o mut [u8; MAX_FILENAME_LEN]) -> Result<&'o [u8], PathError> {
        normalize(self.beneath_root(lookup.filename), out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(r: &OneRoot, name: &[u8]) -> Result<Vec<u8>, PathError> {
        let peer = "192.0.2.10:2000".parse().unwrap();
        let mut out = [0; MAX_FILENAME_LEN];
        r.resolve(&Lookup { filename: name, peer, local: None }, &mut out).map(<[u8]>::to_vec)
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
