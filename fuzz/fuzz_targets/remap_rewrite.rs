//! The rewrite engine on arbitrary rules and names: the first byte splits the input into a map
//! file and a name; the second picks the client. No input may panic, run past the step limit
//! (libFuzzer's timeout catches a loop), build a name longer than the limit or holding a NUL,
//! or give a name that, normalised as the server normalises every name, leaves the root.
#![no_main]

use std::net::IpAddr;

use bootstorm::fs::normalize;
use bootstorm::remap::{Client, MAX_NAME_LEN, Rewrite, Rules};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [split, who, rest @ ..] = data else { return };
    let split = usize::from(*split).min(rest.len());
    let (map, name) = rest.split_at(split);
    if name.len() > 1024 {
        return;
    }
    let Ok(rules) = Rules::parse(map) else { return };
    let addr: IpAddr = match who & 3 {
        0 => [192, 0, 2, 169].into(),
        1 => [10, 0, 0, 1].into(),
        2 => "2001:db8::1".parse().unwrap(),
        _ => "::ffff:192.0.2.1".parse().unwrap(),
    };
    let client = Client { addr, write: who & 4 != 0 };
    let out = match rules.rewrite_checked(name, &client, |n| n.len() % 2 == 0) {
        Rewrite::Name { name, .. } => name,
        Rewrite::Unchanged => name.split(|&b| b == 0).next().unwrap_or_default().to_vec(),
        Rewrite::Denied { .. } => return,
    };
    assert!(out.len() <= MAX_NAME_LEN, "name of {} bytes", out.len());
    assert!(!out.contains(&0), "NUL in a rewritten name");
    let mut buf = [0u8; MAX_NAME_LEN];
    if let Ok(rel) = normalize(&out, &mut buf) {
        assert!(!rel.starts_with(b"/"), "absolute after normalisation");
        assert!(rel.split(|&b| b == b'/').all(|c| c != b".." && !c.is_empty()), "leaves the root");
    }
});
