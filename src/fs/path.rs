//! Request filenames as clients send them, turned into paths relative to the root.
//!
//! Windows boot managers send backslashes, GRUB sends absolute paths (`/vmlinuz`), and some
//! clients double slashes. All of that is folded here, in one place. A `..` component is refused
//! outright; the kernel also refuses any escape when the path is opened (see [`super::root`]).

/// Why a filename cannot name a file under the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Nothing left once slashes are removed.
    #[error("empty path")]
    Empty,
    /// A `..` component.
    #[error("path leaves the root")]
    ParentComponent,
    /// A NUL byte or another control character.
    #[error("control character in path")]
    ControlCharacter,
    /// Longer than the buffer given.
    #[error("path too long")]
    TooLong,
}

/// Normalises `filename` into `out` and returns the relative path: `\` becomes `/`, leading
/// slashes, empty components and `.` components are dropped.
pub fn normalize<'o>(filename: &[u8], out: &'o mut [u8]) -> Result<&'o [u8], PathError> {
    let mut len = 0;
    let mut components = 0usize;
    for comp in filename.split(|&b| b == b'/' || b == b'\\') {
        match comp {
            b"" | b"." => continue,
            b".." => return Err(PathError::ParentComponent),
            _ => {}
        }
        if comp.iter().any(|&b| b < 0x20 || b == 0x7f) {
            return Err(PathError::ControlCharacter);
        }
        let need = comp.len() + usize::from(components > 0);
        let slot = out.get_mut(len..len + need).ok_or(PathError::TooLong)?;
        if components > 0 {
            slot[0] = b'/';
            slot[1..].copy_from_slice(comp);
        } else {
            slot.copy_from_slice(comp);
        }
        len += need;
        components += 1;
    }
    if len == 0 {
        return Err(PathError::Empty);
    }
    Ok(&out[..len])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &[u8]) -> Result<Vec<u8>, PathError> {
        let mut buf = [0u8; 64];
        normalize(s, &mut buf).map(<[u8]>::to_vec)
    }

    #[test]
    fn client_spellings() {
        assert_eq!(n(b"pxelinux.0").unwrap(), b"pxelinux.0");
        assert_eq!(n(b"/vmlinuz").unwrap(), b"vmlinuz", "GRUB's absolute path");
        assert_eq!(n(b"/boot/grub/i386-pc/normal.mod").unwrap(), b"boot/grub/i386-pc/normal.mod");
        assert_eq!(n(b"boot\\x64\\wdsmgfw.efi").unwrap(), b"boot/x64/wdsmgfw.efi", "WDS backslashes");
        assert_eq!(n(b"\\boot\\bcd").unwrap(), b"boot/bcd");
        assert_eq!(n(b"//a//./b/").unwrap(), b"a/b");
        assert_eq!(n(b"pxelinux.cfg/01-aa-bb-cc-dd-ee-ff").unwrap(), b"pxelinux.cfg/01-aa-bb-cc-dd-ee-ff");
        assert_eq!(n(b"a..b/..c").unwrap(), b"a..b/..c", "dots inside names are fine");
    }

    #[test]
    fn refusals() {
        assert_eq!(n(b"../etc/passwd"), Err(PathError::ParentComponent));
        assert_eq!(n(b"/../../etc/passwd"), Err(PathError::ParentComponent));
        assert_eq!(n(b"a/..\\..\\b"), Err(PathError::ParentComponent));
        assert_eq!(n(b"a/b/.."), Err(PathError::ParentComponent));
        assert_eq!(n(b"/"), Err(PathError::Empty));
        assert_eq!(n(b"./."), Err(PathError::Empty));
        assert_eq!(n(b"a\x01b"), Err(PathError::ControlCharacter));
        assert_eq!(n(&[b'x'; 65]), Err(PathError::TooLong));
    }
}
