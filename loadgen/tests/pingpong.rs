//! `loadgen ceiling --pingpong`: the lockstep ceiling runs for its duration over loopback,
//! completes round trips on every setting, and reports them in the JSON the benchmark harness
//! reads.

use std::process::Command;

fn ceiling(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen")).arg("ceiling").args(args).output().unwrap()
}

fn pingpong(args: &[&str]) -> serde_json::Value {
    let out = ceiling(&[&["--pingpong", "--duration", "0.3", "--json"], args].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ceiling --pingpong {args:?} failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap()
}

#[test]
fn pingpong_counts_round_trips_and_reports_goodput() {
    // The default: 32 flows, 4-byte requests, 1472-byte answers holding a 1468-byte block.
    let r = pingpong(&[]);
    assert_eq!(r["flows"].as_u64(), Some(32), "{r}");
    assert_eq!(r["request_bytes"].as_u64(), Some(4), "{r}");
    assert_eq!(r["reply_bytes"].as_u64(), Some(1472), "{r}");
    assert_eq!(r["block_bytes"].as_u64(), Some(1468), "{r}");
    let trips = r["round_trips"].as_u64().unwrap();
    let secs = r["seconds"].as_f64().unwrap();
    assert!(trips > 0, "{r}");
    assert!((0.29..5.0).contains(&secs), "counted for 0.3 s: {r}");
    let rate = r["round_trips_per_s"].as_f64().unwrap();
    assert!((rate - trips as f64 / secs).abs() <= 1e-6 * rate, "{r}");
    let mbps = r["mbps"].as_f64().unwrap();
    assert!((mbps - rate * 1468.0 / 1e6).abs() <= 1e-6 * mbps, "goodput counts the block once per round trip: {r}");
    assert!(r["resent"].as_u64().is_some(), "{r}");

    // Other shapes: one flow (strict ping-pong) and many flows of 512-byte blocks.
    for (flows, size) in [("1", "1472"), ("1500", "516")] {
        let r = pingpong(&["--flows", flows, "--size", size]);
        assert_eq!(r["flows"].as_u64(), flows.parse().ok(), "{r}");
        assert_eq!(r["block_bytes"].as_u64(), Some(size.parse::<u64>().unwrap() - 4), "{r}");
        assert!(r["round_trips"].as_u64().unwrap() > 0, "{r}");
    }
}

#[test]
fn pingpong_flags_are_checked() {
    // --flows belongs to --pingpong; --pingpong and --gso measure different things.
    assert!(!ceiling(&["--flows", "4", "--duration", "0.01"]).status.success());
    assert!(!ceiling(&["--pingpong", "--gso", "4", "--duration", "0.01"]).status.success());
    for flows in ["0", "4097"] {
        assert!(!ceiling(&["--pingpong", "--flows", flows, "--duration", "0.01"]).status.success());
    }
}
