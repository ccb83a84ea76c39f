//! The map-file parser on arbitrary files: it must never panic, and whatever it accepts must
//! rewrite names without panicking and within the step limit.
#![no_main]

use bootstorm::remap::{Client, MAX_NAME_LEN, Rewrite, Rules};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Large files only make the C library's compiler slower, not the parser different.
    if data.len() > 4096 {
        return;
    }
    let Ok(rules) = Rules::parse(data) else { return };
    let client = Client { addr: [192, 0, 2, 169].into(), write: false };
    for name in [&b"pxelinux.0"[..], b"\\Boot\\BCD", b"/tftpboot/pxelinux.cfg/01-aa-bb-cc-dd-ee-ff\xff", b""] {
        if let Rewrite::Name { name, .. } = rules.rewrite(name, &client) {
            assert!(name.len() <= MAX_NAME_LEN && !name.contains(&0));
        }
    }
});
