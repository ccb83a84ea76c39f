//! Reading a server's CPU time and memory from /proc.

/// User + system CPU seconds of process `pid`, with its reaped children (fork-per-transfer
/// servers do their work in children), or `None` if it cannot be read.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14–17 of stat(5) (utime, stime, cutime, cstime) are 11–14 after the state field.
    let ticks: u64 = (11..=14).map(|i| f.get(i).and_then(|v| v.parse::<u64>().ok())).sum::<Option<u64>>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks as f64 / hz)
}

/// Resident set size of process `pid` in kB.
pub(crate) fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_our_own_process() {
        let pid = std::process::id();
        assert!(super::cpu_seconds(pid).is_some());
        assert!(super::rss_kb(pid).unwrap() > 0);
        assert!(super::cpu_seconds(u32::MAX).is_none());
    }
}
