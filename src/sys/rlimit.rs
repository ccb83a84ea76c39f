//! The descriptor limit: one socket per transfer (server) or per client (load generator).

/// Raises the soft limit on open descriptors (`RLIMIT_NOFILE`) to the hard limit; returns the
/// soft limit in force afterwards (`u64::MAX` when it cannot be read). A refused raise leaves
/// the old limit, which is then returned.
pub fn raise_fd_limit() -> u64 {
    let Some(mut lim) = read() else { return u64::MAX };
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: setrlimit reads the rlimit we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            lim = want;
        }
    }
    lim.rlim_cur
}

/// The soft limit on open descriptors in force (`u64::MAX` when it cannot be read or is
/// unlimited).
pub fn fd_limit() -> u64 {
    read().map_or(u64::MAX, |l| l.rlim_cur)
}

fn read() -> Option<libc::rlimit> {
    // SAFETY: plain data out-parameter; all-zero is valid.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: getrlimit writes into the rlimit we own.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_reaches_the_hard_limit() {
        let got = raise_fd_limit();
        // SAFETY: as above.
        let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(got, lim.rlim_cur);
        assert_eq!(lim.rlim_cur, lim.rlim_max);
        assert_eq!(fd_limit(), got);
    }
}
