use std::net::IpAddr;

use super::*;

fn client(addr: &str) -> Client {
    Client { addr: addr.parse().unwrap(), write: false }
}

/// What `name` becomes under `map` for a read from 192.0.2.169: the new name, or `!message`.
fn map(map: &str, name: &[u8]) -> String {
    map_for(map, name, &client("192.0.2.169"))
}

fn map_for(map: &str, name: &[u8], c: &Client) -> String {
    let rules = Rules::parse(map.as_bytes()).unwrap();
    match rules.rewrite(name, c) {
        Rewrite::Unchanged => String::from_utf8_lossy(name).into_owned(),
        Rewrite::Name { name, .. } => String::from_utf8_lossy(&name).into_owned(),
        Rewrite::Denied { message, .. } => format!("!{}", message.unwrap_or_default()),
    }
}

#[test]
fn leftmost_longest_as_posix() {
    // Leftmost-first (Perl, Rust's `regex`) takes the first alternative that matches; POSIX
    // the longest match.
    assert_eq!(map(r"r a|ab X", b"abc"), "Xc");
    assert_eq!(map(r"r (a|ab)(c|bcd)?$ [\1|\2]", b"abcd"), "[a|bcd]");
    assert_eq!(map(r"r (a|ab)(c|bcd)?d?$ [\1|\2]", b"abcd"), "[a|bcd]");
    // Within one longest match, glibc does not give the first group its longest (POSIX would
    // say ab|c|d); tftp-hpa runs on the same library, so this is what it gives too.
    assert_eq!(map(r"r (a|ab)(c|bcd)(d*) [\1|\2|\3]", b"abcd"), "[a|bcd|]");
}

#[test]
fn operations() {
    // Backslashes to slashes, every one (g re-searches from the start).
    assert_eq!(map(r"rg \\ /", br"\Boot\x64\bootmgr.efi"), "/Boot/x64/bootmgr.efi");
    // Without g, the first only.
    assert_eq!(map(r"r \\ /", br"a\b\c"), r"a/b\c");
    // i: case-insensitive.
    assert_eq!(map(r"ri ^PXELINUX pxelinux", b"PxeLinux.0"), "pxelinux.0");
    // All rules run, top to bottom, each on the result of the one before.
    assert_eq!(map("r a b\nr b c", b"a"), "c");
    // e: stop after a rule that matched.
    assert_eq!(map("re a b\nr b c", b"a"), "b");
    assert_eq!(map("re x y\nr a c", b"a"), "c");
    // a: refuse, with the message expanded over the name (tftp-hpa 5.2).
    assert_eq!(map(r"a \.\. Forbidden", b"a/../b"), "!a/Forbidden/b");
    assert_eq!(map(r"a ^/etc", b"/etc/passwd"), "!");
    // ~: run when the pattern does not match.
    assert_eq!(map(r"a~ ^pxe no\ pxe", b"boot"), "!no pxe");
    assert_eq!(map(r"e~ ^pxe", b"boot") + &map("e~ ^pxe\nr . x", b"pxe"), "bootxxe");
    // G and P.
    let put = Client { addr: "192.0.2.1".parse().unwrap(), write: true };
    assert_eq!(map_for("rG a g\nrP a p", b"a", &put), "p");
    assert_eq!(map("rG a g\nrP a p", b"a"), "g");
    // 4 and 6.
    assert_eq!(map_for("r4 a 4\nr6 a 6", b"a", &client("2001:db8::1")), "6");
    assert_eq!(map_for("r4 a 4\nr6 a 6", b"a", &client("::ffff:192.0.2.1")), "4");
}

#[test]
fn replacements() {
    assert_eq!(map(r"r ^(.*)\.(.*)$ \2.\1.\0", b"a.b"), "b.a.a.b");
    assert_eq!(map(r"r ^(x)?(a) [\1\2]", b"a"), "[a]", "an unset group inserts nothing");
    assert_eq!(map(r"r .* \i/\x/\0", b"f"), "192.0.2.169/C00002A9/f");
    assert_eq!(map(r"r .* \L\x", b"f"), "c00002a9");
    assert_eq!(map(r"r .* \U\0\E-\0", b"Ab"), "AB-Ab", "case applies to captures");
    assert_eq!(map(r"r .* \Ux\Ly\Ez", b"q"), "XyZ".to_lowercase().replacen('x', "X", 1));
    assert_eq!(map_for(r"r .* \x", b"f", &client("2001:db8::1")), "20010DB8000000000000000000000001");
    assert_eq!(map_for(r"r .* \i", b"f", &client("2001:db8::1")), "2001:db8::1");
    // Escapes: whitespace, `#`, a backslash, any other letter, a last lone backslash.
    assert_eq!(map(r"r x a\ b\#c\\d\qe\", b"x"), r"a b#c\dqe\");
    // A `#` ends the line; an escaped one is part of the field.
    assert_eq!(map("r x y # comment", b"x"), "y");
    assert_eq!(map(r"r \# y", b"a#b"), "ayb");
    // A missing replacement is empty.
    assert_eq!(map(r"r \.0$", b"pxelinux.0"), "pxelinux");
}

#[test]
fn newer_operations() {
    // gg: sed's g, after the last replacement.
    assert_eq!(map("rgg a aa", b"aba"), "aabaa");
    assert_eq!(map("rg a aa", b"aba"), "!Remap table failure", "g searches from the start: a loop");
    // j and labels.
    let m = "j ^(x|y) \\1\n:x\nre .* X\n:y\nr .* Y";
    assert_eq!(map(m, b"x"), "X");
    assert_eq!(map(m, b"y"), "Y");
    assert_eq!(map("j ^ nowhere\nr . z", b"a"), "!Remap table failure");
    // E: ends only when the result is usable, undone otherwise.
    let rules = Rules::parse(b"rE ^ per-client/\nr ^ common/").unwrap();
    let c = client("192.0.2.1");
    let only = |n: &[u8]| n == b"per-client/a";
    assert_eq!(rules.rewrite_checked(b"a", &c, only), Rewrite::Name { name: b"per-client/a".to_vec(), rule: 1 });
    assert_eq!(rules.rewrite_checked(b"b", &c, only), Rewrite::Name { name: b"common/b".to_vec(), rule: 2 });
    assert_eq!(rules.rewrite(b"a", &c), Rewrite::Name { name: b"common/a".to_vec(), rule: 2 });
}

#[test]
fn restart_resumes_at_the_second_rule_as_in_5_2() {
    assert_eq!(map("r ^x y\nrs ^q x", b"q"), "x");
}

#[test]
fn loops_end_at_the_step_limit() {
    assert_eq!(map("r ^$ x\ns .", b"a"), "!Remap table failure");
    assert_eq!(map("r ^$ x\nrs a b\nrs b a", b"a"), "!Remap table failure");
    assert_eq!(map(r"rg ^(.*)$ \1\1", b"a"), "!Remap table failure", "a name that doubles");
    // 1024 rule visits pass; the 1025th fails.
    let mut m = String::from("r ^ x\n").repeat(1024);
    assert_eq!(map(&m, b"").len(), 1024);
    m.push_str("r ^ x\n");
    assert_eq!(map(&m, b""), "!Remap table failure");
}

#[test]
fn results() {
    let rules = Rules::parse(b"# Windows\n\nrg \\\\ /\nr ^/ \n").unwrap();
    assert_eq!(rules.len(), 2);
    let c = client("192.0.2.1");
    assert_eq!(rules.rewrite(b"pxelinux.0", &c), Rewrite::Unchanged);
    assert_eq!(rules.rewrite(b"\\a", &c), Rewrite::Name { name: b"a".to_vec(), rule: 4 });
    assert_eq!(rules.rewrite(b"a\0\\b", &c), Rewrite::Unchanged, "a NUL ends the name");
    let empty = Rules::parse(b"# nothing\n").unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.rewrite(b"x", &c), Rewrite::Unchanged);
    let denied = Rules::parse(b"\n\na x\n").unwrap().rewrite(b"x", &c);
    assert_eq!(denied, Rewrite::Denied { message: None, rule: 3 });
}

#[test]
fn parse_errors_name_the_line() {
    let e = |m: &str| Rules::parse(m.as_bytes()).unwrap_err().to_string();
    assert_eq!(e("# c\nrx a b"), "map file line 2: unknown operation 'x'");
    assert_eq!(e("r~ a b"), "map file line 1: operations r~ cannot be combined");
    assert_eq!(e("\n\nEj a b"), "map file line 3: operations Ej cannot be combined");
    assert_eq!(e("r"), "map file line 1: no regular expression");
    assert_eq!(e("r # a b"), "map file line 1: no regular expression");
    assert!(e("r ( x").starts_with("map file line 1: bad regular expression: "), "{}", e("r ( x"));
    assert_eq!(e(": x"), "map file line 1: label without a name");
    // Repetitions that glibc would expand into gigabytes are refused before it compiles them.
    // So are stacked `*` and `?`, whose compile time doubles with each (12 take a second).
    let big = [
        "r y++++++++++++++++++++++++++++++++++++++++ x",
        "r ((a{99}){99}){99} x",
        "r (a+)+(b{1,5000}) x",
        "r (x|y)************ x",
        "r ^(x|y)***********************+*******************$ X",
        "r a?????????????? x",
    ];
    for m in big {
        assert!(e(m).contains("too large"), "{m}: {}", e(m));
    }
    let fine = [r"r [[:alpha:]]{1,255}[]x-]+(\.[0-9a-f]{2}){6} x", r"r ^(([^/]*)/)*(.*)$ ", r"r \{+ x"];
    for m in fine {
        assert!(Rules::parse(m.as_bytes()).is_ok(), "{m}");
    }
    // tftp-hpa 5.2's combinations keep its meaning: a before r, e before s.
    assert_eq!(map("ra x y", b"x"), "!y");
    assert_eq!(map("res x y\nr y z", b"x"), "y");
    // g without r means nothing.
    assert_eq!(map("g x y", b"x"), "x");
    let e = Rules::load(std::path::Path::new("/nonexistent/map")).unwrap_err();
    assert_eq!(e.line(), None);
}

#[test]
fn rules_are_shared_between_threads() {
    let rules = std::sync::Arc::new(Rules::parse(br"rg \\ /").unwrap());
    let c = Client { addr: IpAddr::from([192, 0, 2, 1]), write: false };
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let rules = rules.clone();
            std::thread::spawn(move || (0..200).all(|_| rules.rewrite(b"a\\b", &c) != Rewrite::Unchanged))
        })
        .collect();
    assert!(threads.into_iter().all(|t| t.join().unwrap()));
}
