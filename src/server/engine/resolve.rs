//! Which file a request names: the one place between a request's filename and the file system.
//!
//! Today every request is served from one root and the name is only normalised
//! ([`OneRoot`]); per-client views and remap rules would be other implementations of
//! [`Resolve`], which is why it sees the client's and the local address.

use std::net::{IpAddr, SocketAddr};

use crate::fs::{PathError, normalize};
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

/// Every client sees the one root: the filename normalised (see [`normalize`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct OneRoot;

impl Resolve for OneRoot {
    fn resolve<'o>(&self, lookup: &Lookup<'_>, out: &'o mut [u8; MAX_FILENAME_LEN]) -> Result<&'o [u8], PathError> {
        normalize(lookup.filename, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_root_normalises_and_refuses_escapes() {
        let peer = "192.0.2.10:2000".parse().unwrap();
        let mut out = [0; MAX_FILENAME_LEN];
        let look = |filename| Lookup { filename, peer, local: None };
        assert_eq!(OneRoot.resolve(&look(b"/boot//x.efi"), &mut out), Ok(&b"boot/x.efi"[..]));
        assert_eq!(OneRoot.resolve(&look(b"../etc/passwd"), &mut out), Err(PathError::ParentComponent));
        assert_eq!(OneRoot.resolve(&look(b"/"), &mut out), Err(PathError::Empty));
    }
}
