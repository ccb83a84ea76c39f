#!/usr/bin/env python3
"""Helper of scripts/bench.sh (Python 3 standard library only).

    bench_report.py probe HOST PORT FILE       ask for blksize 1468, windowsize 16, tsize and
                                               timeout 1; print what the server negotiated (JSON)
    bench_report.py sample [options]           sample a server's memory until SIGTERM (JSON lines)
    bench_report.py record [options]           turn one loadgen run into one JSON line
    bench_report.py brief FILE [--memory]      one line about a loadgen result (or a record)
    bench_report.py report WORK OUT            runs.jsonl + meta.json in WORK -> table.md,
                                               summary.csv, raw.csv, results.json, plot.svg,
                                               README.md in OUT

See docs/benchmarks.md for what is measured and how.
"""

import argparse
import csv
import json
import math
import os
import signal
import socket
import statistics
import struct
import sys
import time

# ----------------------------------------------------------------------------------------------
# What the workloads measure. `better` is the direction of the metric; `ceiling` names the
# raw-UDP ceiling (datagram size) a MB/s figure is compared with. The lockstep rows
# (PINGPONG_ROWS) are also compared with the ping-pong ceiling (`loadgen ceiling --pingpong`).

SERVERS = ["bootstorm", "bootstorm-sp", "tftpd-hpa", "dnsmasq", "atftpd", "tftpd-rs"]
MEM_SERVERS = SERVERS
SERVER_LABEL = {"bootstorm-sp": "bootstorm --single-port"}

# (workload, metric key, label, better, ceiling datagram size or None, decimals)
ROWS = [
    ("small", "transfers_per_s", "transfers/s", "higher", 516, 0),
    ("small-1src", "transfers_per_s", "transfers/s", "higher", 516, 0),
    ("bulk-lockstep", "goodput_mbps", "MB/s", "higher", 1472, 1),
    ("bulk-lockstep", "cpu_s_per_gib", "server CPU s/GiB", "lower", None, 2),
    ("bulk-lockstep-1src", "goodput_mbps", "MB/s", "higher", 1472, 1),
    ("bulk-lockstep-1src", "cpu_s_per_gib", "server CPU s/GiB", "lower", None, 2),
    ("bulk-windowed", "goodput_mbps", "MB/s", "higher", 1472, 1),
    ("bulk-windowed", "cpu_s_per_gib", "server CPU s/GiB", "lower", None, 2),
    ("bulk-windowed-gro", "goodput_mbps", "MB/s", "higher", "gso1472", 1),
    ("bulk-windowed-gro", "cpu_s_per_gib", "server CPU s/GiB", "lower", None, 2),
    ("storm-1k", "makespan_s", "makespan s", "lower", 1472, 2),
    ("storm-1k-1src", "makespan_s", "makespan s", "lower", 1472, 2),
    ("storm-10k", "makespan_s", "makespan s", "lower", 1472, 2),
    ("storm-10k-reuse", "makespan_s", "makespan s", "lower", 1472, 2),
    ("loss-1", "goodput_mbps", "goodput MB/s", "higher", 1472, 2),
    ("loss-5", "goodput_mbps", "goodput MB/s", "higher", 1472, 2),
    ("rollover", "goodput_mbps", "MB/s", "higher", 516, 1),
]
# Workloads whose transfers are lockstep (one DATA, one ACK per block), shown also as a
# fraction of the ping-pong ceiling: blocks per second (the cell's median goodput / its block
# size) / the ceiling's round trips per second, measured with 1468-byte blocks, or 512-byte
# ones for blocks of 1024 bytes and less.
PINGPONG_ROWS = {"small", "small-1src", "bulk-lockstep", "bulk-lockstep-1src", "storm-1k",
                 "storm-1k-1src", "storm-10k", "storm-10k-reuse"}
PROFILE_BLKSIZE = {"uefi": 1468, "pxelinux": 1408, "grub": 1024}
MEM_ROWS = [
    ("pss_per_transfer", "RSS (PSS) per transfer, bytes", "lower", 0),
    ("cg_per_transfer", "cgroup memory per transfer, bytes", "lower", 0),
]
WORKLOAD_TITLE = {
    "small": "small-file rate",
    "small-1src": "small-file rate, one address",
    "bulk-lockstep": "bulk lockstep",
    "bulk-lockstep-1src": "bulk lockstep, one address",
    "bulk-windowed": "bulk windowed",
    "bulk-windowed-gro": "bulk windowed, receiver GRO",
    "storm-1k": "boot storm 1k",
    "storm-1k-1src": "boot storm 1k × 1 MiB, one address",
    "storm-10k": "boot storm 10k",
    "storm-10k-reuse": "boot storm 10k, one port per client",
    "loss-1": "1% loss",
    "loss-5": "5% loss",
    "rollover": "rollover",
    "memory": "memory",
}
LATENCY = [  # (workload, histogram, label)
    ("small", "transfer_ms", "small-file transfer"),
    ("small-1src", "transfer_ms", "small-file transfer, one address"),
    ("bulk-lockstep", "transfer_ms", "bulk lockstep transfer"),
    ("bulk-lockstep-1src", "transfer_ms", "bulk lockstep transfer, one address"),
    ("bulk-windowed", "transfer_ms", "bulk windowed transfer"),
    ("storm-1k", "session_ms", "boot storm 1k session"),
    ("storm-1k-1src", "session_ms", "boot storm 1k session, one address"),
    ("storm-10k", "session_ms", "boot storm 10k session"),
]
COLORS = {
    "bootstorm": "#d62728",
    "bootstorm-sp": "#ff9896",
    "tftpd-hpa": "#1f77b4",
    "dnsmasq": "#2ca02c",
    "atftpd": "#9467bd",
    "tftpd-rs": "#8c564b",
}


# ----------------------------------------------------------------------------------------------
# probe


def cmd_probe(a):
    """One RRQ with options; report the OACK (or that the server ignored the options)."""
    out = {"server": f"{a.host}:{a.port}", "asked": {"blksize": "1468", "windowsize": "16",
                                                     "tsize": "0", "timeout": "1"}}
    opts = [b"blksize", b"1468", b"windowsize", b"16", b"tsize", b"0", b"timeout", b"1"]
    req = b"\x00\x01" + a.file.encode() + b"\x00octet\x00" + b"".join(o + b"\x00" for o in opts)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    try:
        for _ in range(3):
            s.sendto(req, (a.host, a.port))
            try:
                data, peer = s.recvfrom(70000)
            except socket.timeout:
                continue
            op = struct.unpack("!H", data[:2])[0]
            if op == 6:  # OACK
                parts = data[2:].split(b"\x00")
                got = {}
                for k, v in zip(parts[0::2], parts[1::2]):
                    if k:
                        got[k.decode(errors="replace").lower()] = v.decode(errors="replace")
                out["oack"] = got
                s.sendto(b"\x00\x05\x00\x08probe done\x00", peer)
            elif op == 3:  # DATA: options ignored
                out["oack"] = None
                out["note"] = "answered with DATA: no options"
                s.sendto(b"\x00\x05\x00\x00probe done\x00", peer)
            elif op == 5:
                out["error"] = data[4:].split(b"\x00")[0].decode(errors="replace")
            else:
                out["error"] = f"unexpected opcode {op}"
            break
        else:
            out["error"] = "no answer"
    finally:
        s.close()
    print(json.dumps(out))


# ----------------------------------------------------------------------------------------------
# sample


def read_kv(path, keys):
    got = {}
    try:
        with open(path) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in keys:
                    got[k] = int(v.split()[0])
    except OSError:
        pass
    return got


def descendants(root):
    """root and every process below it (by scanning /proc)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        rest = st[st.rfind(")") + 2:].split()
        children.setdefault(int(rest[1]), []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cmd_sample(a):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    out = open(a.out, "a", buffering=1)
    while not stop:
        t = time.time()
        pids = []
        if a.cgroup_procs:
            try:
                with open(a.cgroup_procs) as f:
                    pids = [int(x) for x in f.read().split()]
            except OSError:
                pids = []
        if not pids:
            pids = descendants(a.pid) if os.path.exists(f"/proc/{a.pid}") else []
        rss = pss = threads = 0
        procs = 0
        for p in pids:
            st = read_kv(f"/proc/{p}/status", ("VmRSS", "Threads"))
            if "VmRSS" not in st:
                continue  # gone, or a zombie
            procs += 1
            rss += st["VmRSS"]
            threads += st.get("Threads", 1)
            pss += read_kv(f"/proc/{p}/smaps_rollup", ("Pss",)).get("Pss", st["VmRSS"])
        try:
            fds = len(os.listdir(f"/proc/{a.pid}/fd"))
        except OSError:
            fds = None
        cg = None
        if a.cg_mem:
            try:
                with open(a.cg_mem) as f:
                    cg = int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                cg = None
        out.write(json.dumps({"t": t, "procs": procs, "threads": threads, "rss_kb": rss,
                              "pss_kb": pss, "fds": fds, "cg_bytes": cg}) + "\n")
        spent = time.time() - t
        if not stop:
            time.sleep(max(0.02, a.interval - spent))


# ----------------------------------------------------------------------------------------------
# record


def load_json(path):
    try:
        with open(path) as f:
            text = f.read().strip()
        if not text:
            return None
        return json.loads(text.splitlines()[-1])
    except (OSError, ValueError):
        return None


def cmd_record(a):
    lg = load_json(a.stdout) if a.stdout else None
    rec = {
        "round": a.round, "server": a.server, "workload": a.workload, "args": a.args,
        "rc": a.rc, "wall_s": a.wall, "crashed": bool(a.crashed), "timeout_s": a.timeout,
        "start_failed": bool(a.start_failed), "loadgen": lg,
    }
    if a.stderr:
        try:
            with open(a.stderr, errors="replace") as f:
                tail = f.read()[-600:]
            rec["stderr_tail"] = tail
        except OSError:
            pass
    # status
    if a.start_failed:
        status = "start failed"
    elif a.crashed:
        status = "crashed"
    elif lg is None:
        status = "timed out" if a.rc in (124, 137) else "error"
    elif lg.get("transfers_failed", 0) > 0:
        status = "failures"
    else:
        status = "ok"
    rec["status"] = status
    # CPU: the server's cgroup (covers forked children and threads) when there is one,
    # otherwise what loadgen read from /proc/PID/stat.
    if lg is not None:
        gib = lg.get("bytes", 0) / float(1 << 30)
        if a.cpu_cg is not None:
            rec["cpu_s"], rec["cpu_source"] = a.cpu_cg, "cgroup"
        elif lg.get("server_cpu_s") is not None:
            rec["cpu_s"], rec["cpu_source"] = lg["server_cpu_s"], "loadgen (/proc/PID/stat)"
        if rec.get("cpu_s") is not None and gib > 0:
            rec["cpu_s_per_gib"] = rec["cpu_s"] / gib
    if a.samples:
        rec["memory"] = memory_stats(a, lg)
    print(json.dumps(rec))


def memory_stats(a, lg):
    samples = []
    try:
        with open(a.samples) as f:
            for line in f:
                try:
                    samples.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        pass
    idle = [s for s in samples if a.idle_start <= s["t"] < a.load_start]
    load = [s for s in samples if a.load_start <= s["t"] <= a.load_end]
    window = [s for s in load if a.load_start + a.window_lo <= s["t"] <= a.load_start + a.window_hi]

    def med(xs, k):
        v = [s[k] for s in xs if s.get(k) is not None]
        return statistics.median(v) if v else None

    def peak(xs, k):
        v = [s[k] for s in xs if s.get(k) is not None]
        return max(v) if v else None

    m = {
        "clients": a.clients, "samples_idle": len(idle), "samples_load": len(load),
        "idle_rss_kb": med(idle, "rss_kb"), "idle_pss_kb": med(idle, "pss_kb"),
        "idle_cg_bytes": med(idle, "cg_bytes"),
        "peak_rss_kb": peak(load, "rss_kb"), "peak_pss_kb": peak(load, "pss_kb"),
        "peak_cg_bytes": peak(load, "cg_bytes"),
        "window_pss_kb": med(window, "pss_kb"), "window_cg_bytes": med(window, "cg_bytes"),
        "peak_procs": peak(load, "procs"), "peak_threads": peak(load, "threads"),
        "peak_fds": peak(load, "fds"), "idle_fds": med(idle, "fds"),
    }
    # Per transfer: over all clients, or, when some failed (refused, never served), over the
    # transfers that were served.
    n = a.clients
    if lg and lg.get("transfers_failed", 0) > 0:
        n = lg.get("transfers_ok", 0)
    m["divisor"] = n
    n = max(1, n)
    if m["idle_pss_kb"] is not None and m["peak_pss_kb"] is not None:
        m["pss_per_transfer"] = (m["peak_pss_kb"] - m["idle_pss_kb"]) * 1024 / n
    if m["idle_rss_kb"] is not None and m["peak_rss_kb"] is not None:
        m["rss_per_transfer"] = (m["peak_rss_kb"] - m["idle_rss_kb"]) * 1024 / n
    if m["idle_cg_bytes"] is not None and m["peak_cg_bytes"] is not None:
        m["cg_per_transfer"] = (m["peak_cg_bytes"] - m["idle_cg_bytes"]) / n
    return m


# ----------------------------------------------------------------------------------------------
# brief


def cmd_brief(a):
    """One line about a loadgen JSON file, or (--memory) about a record line."""
    text = sys.stdin.read() if a.file == "-" else open(a.file).read()
    try:
        d = json.loads(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        print("no result")
        return
    if a.memory:
        m = d.get("memory") or {}

        def f(k):
            return "-" if m.get(k) is None else f"{m[k]:,.0f}"
        lg = d.get("loadgen") or {}
        print(f"{d.get('status')}: {lg.get('transfers_ok', '-')} ok, "
              f"{lg.get('transfers_failed', '-')} failed; idle PSS {f('idle_pss_kb')} kB, "
              f"peak {f('peak_pss_kb')} kB: {f('pss_per_transfer')} B/transfer (cgroup "
              f"{f('cg_per_transfer')} B/transfer); peak procs {f('peak_procs')}, threads "
              f"{f('peak_threads')}, fds {f('peak_fds')}")
        return
    fails = d.get("failures") or {}
    print(f"{d['transfers_ok']} ok, {d['transfers_failed']} failed"
          + (f" {fails}" if fails else "")
          + f", {d['goodput_mbps']:.1f} MB/s, {d['transfers_per_s']:.0f}/s, "
          f"makespan {d['makespan_s']:.2f} s, retransmits {d['retransmits']}")


# ----------------------------------------------------------------------------------------------
# report


def fmt(v, dec):
    if v is None:
        return "—"
    if abs(v) >= 1000 or dec == 0:
        return f"{v:,.0f}"
    return f"{v:.{dec}f}"


def metric_of(run, key):
    if key in ("cpu_s_per_gib",):
        return run.get(key)
    if key in ("pss_per_transfer", "cg_per_transfer", "rss_per_transfer"):
        return (run.get("memory") or {}).get(key)
    lg = run.get("loadgen")
    return None if lg is None else lg.get(key)


class Cell:
    """All runs of one (server, workload) and the aggregate of one metric."""

    def __init__(self, runs, key):
        self.runs = runs
        self.n = len(runs)
        # A run counts when it produced numbers and the server did not die under it.
        self.valid = [r for r in runs if r["status"] in ("ok", "failures")]
        vals = [metric_of(r, key) for r in self.valid]
        self.values = [v for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
        self.median = statistics.median(self.values) if self.values else None
        mb = [r["loadgen"]["goodput_mbps"] for r in self.valid if r.get("loadgen")]
        self.goodput = statistics.median(mb) if mb else None
        self.lo = min(self.values) if self.values else None
        self.hi = max(self.values) if self.values else None
        self.failed = [r["loadgen"]["transfers_failed"] for r in self.valid
                       if r["loadgen"] and r["loadgen"].get("transfers_failed", 0) > 0]
        self.crashed = sum(1 for r in runs if r["status"] == "crashed")
        self.clean = self.n > 0 and all(r["status"] == "ok" for r in runs)
        self.statuses = sorted({r["status"] for r in runs})

    def text(self, dec, ceiling=None, unit="", pingpong=None):
        if self.n == 0:
            return "not run"
        if self.median is None:
            why = [r["status"] for r in self.runs]
            first_bad = next(r for r in self.runs)
            s = ", ".join(sorted(set(why)))
            if "timed out" in why and first_bad.get("timeout_s"):
                s = f"timed out (>{first_bad['timeout_s']:g} s)"
            if self.crashed:
                lg = next((r["loadgen"] for r in self.runs if r.get("loadgen")), None)
                if lg:
                    s += f" ({lg['transfers_ok']} ok, {lg['transfers_failed']} failed)"
            return s
        t = fmt(self.median, dec) + unit
        if len(self.values) > 1:
            t += f" ({fmt(self.lo, dec)}–{fmt(self.hi, dec)})"
        if ceiling and self.goodput is not None:
            t += f", {pct(self.goodput / ceiling)} ceil"
        if pingpong and self.goodput is not None:
            t += f", {pct(self.goodput / pingpong)} of ping-pong"
        notes = []
        if self.failed:
            k = f" in {len(self.failed)}/{self.n} runs" if self.n > 1 else ""
            notes.append(f"⚠ {max(self.failed)} failed{k}")
        if self.crashed:
            notes.append(f"crashed {self.crashed}/{self.n}")
        bad = self.n - len(self.valid) - self.crashed
        if bad:
            notes.append(f"{bad}/{self.n} runs without result")
        if notes:
            t += ", " + ", ".join(notes)
        return t


def pct(x):
    return f"{100 * x:.0f}%" if x >= 0.1 else f"{100 * x:.1f}%" if x >= 0.001 else "<0.1%"


def block_size(args):
    """The block size a loadgen argument string asks for (--blksize, else its profile's, else
    512)."""
    b = arg_value(args, "--blksize")
    if b and b.isdigit():
        return int(b)
    return PROFILE_BLKSIZE.get(arg_value(args, "--profile") or "", 512)


def pingpong_for(pingpong, blk):
    """The goodput (MB/s) the ping-pong ceiling allows blocks of `blk` bytes: its round trips
    per second, measured with 1468-byte blocks (512-byte ones for `blk` <= 1024), times `blk`."""
    c = pingpong.get(516 if blk <= 1024 else 1472) or pingpong.get(1472)
    return c["round_trips_per_s"] * blk / 1e6 if c else None


def arg_value(args, flag):
    """The value after `flag` in a loadgen argument string, or None."""
    words = (args or "").split()
    for i, w in enumerate(words[:-1]):
        if w == flag:
            return words[i + 1]
    return None


def silent_clients(run):
    """(lo, hi): bounds on the clients of one loadgen run that never got any answer, or None
    without a result. loadgen counts a request unanswered after all its retries as a failure
    "timeout" but does not say at which step; so silent <= timeouts. In a PXELINUX storm with
    one miss, every session's first request is the miss: the sessions that did not get their
    ERROR 1 are storm - misses, and those among them that failed with anything but a timeout
    did get an answer, so silent >= storm - misses - other failures."""
    lg = run.get("loadgen")
    if not lg:
        return None
    fails = lg.get("failures") or {}
    timeouts = fails.get("timeout", 0)
    other = lg.get("transfers_failed", 0) - timeouts
    lo, hi = 0, timeouts
    storm, misses = arg_value(run.get("args"), "--storm"), arg_value(run.get("args"), "--misses")
    if storm and misses == "1" and "pxelinux" in (run.get("args") or "") \
            and lg.get("sessions") == int(storm):
        first = int(storm) - lg.get("misses", 0)
        lo, hi = max(0, first - other), min(hi, first)
    return lo, max(lo, hi)


def ratio_text(cells, better, unclean_ok=False):
    """bootstorm against the best clean peer; > 1 always means bootstorm is better. With
    unclean_ok, peers whose runs had failed transfers (but numbers) count when none is clean."""
    b = cells.get("bootstorm")
    peers = {s: c for s, c in cells.items() if s not in ("bootstorm", "bootstorm-sp")}
    clean = {s: c for s, c in peers.items() if c.clean and c.median is not None}
    note = ""
    if not clean and unclean_ok:
        clean = {s: c for s, c in peers.items() if c.median is not None and not c.crashed}
        note = " (no peer without failures)"
    if b is None or b.median is None:
        return "—", None
    if not clean:
        return "no clean peer", None
    if better == "higher":
        best = max(clean, key=lambda s: clean[s].median)
        r = b.median / clean[best].median if clean[best].median else None
    else:
        best = min(clean, key=lambda s: clean[s].median)
        r = clean[best].median / b.median if b.median else None
    if r is None:
        return "—", None
    t = f"×{r:.2f} vs {best}{note}"
    if not b.clean:
        t += " (bootstorm not clean)"
    return t, {"best_peer": best, "ratio": r, "peer_clean": not note}


def cmd_report(a):
    work, out = a.work, a.out
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(work, "meta.json")) as f:
        meta = json.load(f)
    runs = []
    with open(os.path.join(work, "runs.jsonl")) as f:
        for line in f:
            line = line.strip()
            if line:
                runs.append(json.loads(line))
    ceilings = {}
    for size, vals in meta.get("ceilings", {}).items():
        if size.startswith("pingpong"):
            continue
        mb = [v["mbps"] for v in vals if v and v.get("mbps")]
        if mb:
            ceilings[int(size) if size.isdigit() else size] = {"median": statistics.median(mb), "min": min(mb), "max": max(mb),
                                   "runs": len(mb)}
    # The lockstep ceiling: datagram size -> round trips/s and MB/s (median of rounds).
    pingpong = {}
    for key, vals in meta.get("ceilings", {}).items():
        if not key.startswith("pingpong") or not key[8:].isdigit():
            continue
        rt = [v["round_trips_per_s"] for v in vals if v and v.get("round_trips_per_s")]
        if rt:
            pingpong[int(key[8:])] = {
                "round_trips_per_s": statistics.median(rt), "min": min(rt), "max": max(rt),
                "runs": len(rt), "mbps": statistics.median(v["mbps"] for v in vals if v),
                "flows": vals[0].get("flows"), "block_bytes": vals[0].get("block_bytes")}
    servers = [s for s in SERVERS if s in meta["servers"]]
    workloads = meta["workloads"]  # id -> {args, ...} (only those run)

    by = {}
    for r in runs:
        by.setdefault((r["server"], r["workload"]), []).append(r)

    # ---------------------------------------------------------------- main table
    lines = []
    agg = {"ceilings": ceilings, "pingpong": pingpong, "rows": [], "memory": [], "latency": []}
    neg = meta.get("negotiated", {})
    bs_args = meta.get("bootstorm_args") or ""
    sp_args = meta.get("single_port_args") or ""
    shown = [f"bootstorm {bs_args}" if s == "bootstorm" and bs_args
             else f"bootstorm --single-port {sp_args}" if s == "bootstorm-sp" and sp_args
             else SERVER_LABEL.get(s, s) for s in servers]
    # Single-port mode beside the default mode: > 1 means single-port is better.
    sp_col = "bootstorm" in servers and "bootstorm-sp" in servers
    head = "| workload | metric | " + " | ".join(shown) + " | bootstorm vs best peer |"
    if sp_col:
        head += " single-port vs default |"
    lines.append(head)
    lines.append("|" + "---|" * (len(servers) + 3 + sp_col))
    for wl, key, label, better, csize, dec in ROWS:
        if wl not in workloads:
            continue
        cells = {s: Cell(by.get((s, wl), []), key) for s in servers}
        ceil = ceilings.get(csize, {}).get("median") if csize else None
        pp = None
        if wl in PINGPONG_ROWS and key != "cpu_s_per_gib":
            pp = pingpong_for(pingpong, block_size(workloads[wl].get("args")))
        texts = []
        for s in servers:
            t = cells[s].text(dec, ceil if key != "cpu_s_per_gib" else None, pingpong=pp)
            if wl.startswith("bulk-windowed") and key == "goodput_mbps":
                ws = (neg.get(s) or {}).get("oack")
                if s in neg:
                    if ws is None or "windowsize" not in (ws or {}):
                        t += ", lockstep (no windowsize)"
                    elif ws.get("windowsize") != "16":
                        t += f", windowsize {ws['windowsize']}"
            texts.append(t)
        rt, rj = ratio_text(cells, better)
        if wl.startswith("bulk-windowed") and key == "goodput_mbps" and ceil and cells["bootstorm"].median:
            rt += f"; bootstorm = {pct(cells['bootstorm'].median / ceil)} of raw UDP"
        title = WORKLOAD_TITLE[wl]
        row = (f"| {title} | {label} ({'↑' if better == 'higher' else '↓'}) | "
               + " | ".join(texts) + f" | {rt} |")
        sp_ratio = None
        if sp_col:
            d, sp = cells["bootstorm"].median, cells["bootstorm-sp"].median
            if d and sp:
                sp_ratio = sp / d if better == "higher" else d / sp
            row += f" {sp_ratio:.2f} |" if sp_ratio is not None else " — |"
        lines.append(row)
        agg["rows"].append({
            "workload": wl, "metric": key, "label": label, "better": better,
            "ceiling_datagram": csize, "ratio": rj, "single_port_vs_default": sp_ratio,
            "pingpong_mbps": pp,
            "cells": {s: {"median": cells[s].median, "min": cells[s].lo, "max": cells[s].hi,
                          "values": cells[s].values, "runs": cells[s].n,
                          "statuses": [r["status"] for r in cells[s].runs],
                          "failed_max": max(cells[s].failed) if cells[s].failed else 0,
                          "goodput_mbps": cells[s].goodput,
                          "fraction_of_ceiling": (cells[s].goodput / ceil)
                          if (ceil and cells[s].goodput is not None and key != "cpu_s_per_gib")
                          else None,
                          "fraction_of_pingpong": (cells[s].goodput / pp)
                          if (pp and cells[s].goodput is not None) else None,
                          "text": texts[i]} for i, s in enumerate(servers)},
        })
    table = "\n".join(lines)

    # ---------------------------------------------------------------- memory table
    mem_lines = []
    if "memory" in workloads:
        mservers = [s for s in MEM_SERVERS if s in meta["servers"] or
                    (s == "bootstorm-sp" and "bootstorm" in meta["servers"])]
        mem_lines.append("| server | idle RSS (PSS) | RSS (PSS) per transfer | idle cgroup | "
                         "cgroup per transfer | concurrency seen | loadgen |")
        mem_lines.append("|---|---|---|---|---|---|---|")
        mcells = {}
        for s in mservers:
            rs = by.get((s, "memory"), [])
            c1, c2 = Cell(rs, "pss_per_transfer"), Cell(rs, "cg_per_transfer")
            mcells[s] = (c1, c2)
            ms = [r.get("memory") or {} for r in c1.valid]

            def medkey(k, scale=1.0):
                v = [m[k] for m in ms if m.get(k) is not None]
                return statistics.median(v) * scale if v else None

            idle_pss = medkey("idle_pss_kb", 1024)
            idle_cg = medkey("idle_cg_bytes")
            conc = []
            for k, lab in (("peak_procs", "procs"), ("peak_threads", "threads"), ("peak_fds", "fds")):
                v = medkey(k)
                if v is not None and v > 1:
                    conc.append(f"{v:,.0f} {lab}")
            lgs = [r["loadgen"] for r in c1.valid if r.get("loadgen")]
            lgt = "—"
            if lgs:
                lgt = f"{lgs[-1]['transfers_ok']:,} ok, {lgs[-1]['transfers_failed']:,} failed"
                if lgs[-1].get("transfers_failed"):
                    fails = lgs[-1].get("failures", {})
                    lgt += " (" + ", ".join(f"{k}: {v}" for k, v in list(fails.items())[:2]) + ")"
            elif rs:
                lgt = ", ".join(sorted({r["status"] for r in rs}))
            mem_lines.append(
                f"| {SERVER_LABEL.get(s, s)} | {human_bytes(idle_pss)} | {c1.text(0)} | "
                f"{human_bytes(idle_cg)} | {c2.text(0)} | {', '.join(conc) or '—'} | {lgt} |")
            agg["memory"].append({
                "server": s, "idle_pss_bytes": idle_pss, "idle_cg_bytes": idle_cg,
                "pss_per_transfer": {"median": c1.median, "min": c1.lo, "max": c1.hi},
                "cg_per_transfer": {"median": c2.median, "min": c2.lo, "max": c2.hi},
                "statuses": [r["status"] for r in rs]})
        for key_i, (key, label, better, dec) in enumerate(MEM_ROWS):
            cells = {s: mcells[s][key_i] for s in mcells}
            rt, rj = ratio_text(cells, better, unclean_ok=True)
            sp = cells.get("bootstorm-sp")
            if sp is not None and sp.median is not None:
                peers = {s: c for s, c in cells.items() if s not in ("bootstorm", "bootstorm-sp")}
                cl = {s: c for s, c in peers.items() if c.clean and c.median}
                if not cl:
                    cl = {s: c for s, c in peers.items() if c.median and not c.crashed}
                if cl:
                    best = min(cl, key=lambda s: cl[s].median)
                    rt += f"; --single-port: ×{cl[best].median / sp.median:.2f} vs {best}" \
                        if sp.median > 0 else ""
            mem_lines.append("")
            mem_lines.append(f"{label}: bootstorm vs best peer {rt} (> 1: bootstorm uses less).")
            agg.setdefault("memory_ratio", {})[key] = rj
    mem_table = "\n".join(mem_lines)

    # ---------------------------------------------------------------- latency table
    lat_lines = []
    lat_rows = [x for x in LATENCY if x[0] in workloads]
    if lat_rows:
        lat_lines.append("| latency, ms: p50 / p99 (median of runs) | " + " | ".join(shown) + " |")
        lat_lines.append("|" + "---|" * (len(servers) + 1))
        for wl, hist, label in lat_rows:
            cols = []
            for s in servers:
                rs = [r for r in by.get((s, wl), []) if r["status"] in ("ok", "failures")]
                p50 = [r["loadgen"][hist]["p50"] for r in rs if r["loadgen"][hist]["count"]]
                p99 = [r["loadgen"][hist]["p99"] for r in rs if r["loadgen"][hist]["count"]]
                if p50:
                    cols.append(f"{fmt(statistics.median(p50), 1)} / {fmt(statistics.median(p99), 1)}")
                    agg["latency"].append({"workload": wl, "histogram": hist, "server": s,
                                           "p50_ms": statistics.median(p50),
                                           "p99_ms": statistics.median(p99)})
                else:
                    cols.append("—")
            lat_lines.append(f"| {label} | " + " | ".join(cols) + " |")
    lat_table = "\n".join(lat_lines)

    # ---------------------------------------------------------------- failures / silence table
    # The target for every workload: no failed transfer and no client left without an answer.
    fail_lines = ["| workload | " + " | ".join(shown) + " |", "|" + "---|" * (len(servers) + 1)]
    agg["failures"] = []
    for wl in workloads:
        if wl == "memory":
            continue
        cols = []
        for s in servers:
            rs = by.get((s, wl), [])
            res = [r for r in rs if r.get("loadgen")]
            if not rs:
                cols.append("not run")
                continue
            if not res:
                cols.append(", ".join(sorted({r["status"] for r in rs})))
                continue
            worst = max(res, key=lambda r: r["loadgen"].get("transfers_failed", 0))
            lg = worst["loadgen"]
            nf = lg.get("transfers_failed", 0)
            sil = silent_clients(worst)
            bad_runs = sum(1 for r in res if r["loadgen"].get("transfers_failed", 0) > 0)
            sil_t = "0" if sil == (0, 0) else (f"{sil[0]:,}" if sil[0] == sil[1]
                                               else f"{sil[0]:,}–{sil[1]:,}")
            if nf == 0:
                t = "0 failed, 0 silent"
                if "wrong_answers" in lg and "--reuse-port" in (worst.get("args") or ""):
                    wrong = max(r["loadgen"].get("wrong_answers", 0) for r in res)
                    stale = max(r["loadgen"].get("stale_packets", 0) for r in res)
                    t += f", {wrong:,} wrong answers ({stale:,} stale blocks ignored)"
            else:
                causes = ", ".join(f"{k} {v:,}" for k, v in (lg.get("failures") or {}).items())
                t = f"⚠ {nf:,} failed ({causes}), {sil_t} silent"
                if len(res) > 1:
                    t += f" (worst of {len(res)} runs; failures in {bad_runs})"
            missing = len(rs) - len(res)
            if missing:
                t += f", {missing}/{len(rs)} runs without result"
            cols.append(t)
            agg["failures"].append({
                "workload": wl, "server": s, "runs": len(rs), "runs_with_result": len(res),
                "runs_with_failures": bad_runs,
                "failed": [r["loadgen"].get("transfers_failed", 0) for r in res],
                "silent": [silent_clients(r) for r in res],
                "worst_failures": lg.get("failures") or {}})
        fail_lines.append(f"| {WORKLOAD_TITLE.get(wl, wl)} | " + " | ".join(cols) + " |")
    fail_table = "\n".join(fail_lines)

    # ---------------------------------------------------------------- the load generator's share
    # Its CPU seconds per second of the run and per thread. Near 100% it never waited for the
    # server: on CPUs it shares with the server, the cell shows the client's limit as much as
    # the server's.
    lg_lines = ["| workload | " + " | ".join(shown) + " |", "|" + "---|" * (len(servers) + 1)]
    agg["loadgen"] = []
    for wl in workloads:
        if wl == "memory":
            continue
        cols = []
        for s in servers:
            rs = [r for r in by.get((s, wl), []) if r["status"] in ("ok", "failures") and r.get("loadgen")]
            busy = [r["loadgen"]["loadgen_busy"] for r in rs if r["loadgen"].get("loadgen_busy") is not None]
            per_gib = [r["loadgen"]["loadgen_cpu_s_per_gib"] for r in rs
                       if r["loadgen"].get("loadgen_cpu_s_per_gib") is not None]
            if not busy:
                cols.append("—")
                continue
            t = f"{pct(statistics.median(busy))} busy"
            if per_gib:
                t += f", {fmt(statistics.median(per_gib), 2)} CPU-s/GiB"
            cols.append(t)
            agg["loadgen"].append({"workload": wl, "server": s, "busy": statistics.median(busy),
                                   "cpu_s_per_gib": statistics.median(per_gib) if per_gib else None})
        lg_lines.append(f"| {WORKLOAD_TITLE.get(wl, wl)} | " + " | ".join(cols) + " |")
    lg_table = "\n".join(lg_lines)

    # ---------------------------------------------------------------- workloads / ceiling text
    wl_lines = ["| workload | loadgen arguments (plus --server, --verify, --server-pid, --json) |",
                "|---|---|"]
    for wl, w in workloads.items():
        wl_lines.append(f"| {WORKLOAD_TITLE.get(wl, wl)} (`{wl}`) | `{w['args']}` |")
    def ceil_name(size):
        if isinstance(size, str) and size.startswith("gso"):
            return f"{size[3:]}-byte datagrams sent 16 per GSO send to a GRO receiver"
        return f"{size}-byte datagrams"
    ceil_text = ", ".join(
        f"{c['median']:.0f} MB/s with {ceil_name(size)}"
        + (f" ({c['min']:.0f}–{c['max']:.0f}, {c['runs']} runs)" if c["runs"] > 1 else "")
        for size, c in sorted(ceilings.items(), key=lambda kv: str(kv[0]), reverse=True)) or "not measured"
    pp_text = ", ".join(
        f"{c['round_trips_per_s']:,.0f} round trips/s = {c['mbps']:.0f} MB/s of "
        f"{c.get('block_bytes') or size - 4}-byte blocks"
        + (f" ({c['min']:,.0f}–{c['max']:,.0f} round trips/s, {c['runs']} runs)" if c["runs"] > 1 else "")
        for size, c in sorted(pingpong.items(), reverse=True)) or "not measured"

    neg_lines = []
    for s in servers:
        n = neg.get(s)
        if not n:
            continue
        if n.get("oack") is not None:
            got = ", ".join(f"{k} {v}" for k, v in n["oack"].items())
            neg_lines.append(f"- {s}: OACK {got}")
        else:
            neg_lines.append(f"- {s}: {n.get('note') or n.get('error') or 'no OACK'}")

    # The memory section only where the memory workload ran.
    mem_section = [
        "## Memory at many concurrent transfers",
        "",
        (f"{meta['params'].get('mem_clients', '?')} clients holding every ACK "
         f"{meta['params'].get('mem_hold_ms', '?')} ms; per transfer = "
         "(peak while loaded − idle after warm-up) / clients (/ transfers served, where some "
         "failed: ⚠). RSS (PSS): summed over the "
         "server's processes (PSS, so that forked children are not counted for shared pages; "
         "for a single process the change equals the change of VmRSS). cgroup: "
         f"{meta.get('cgroup', {}).get('memory_file') or 'not available'} "
         "(includes kernel memory such as socket structures"
         + ("" if meta.get("cgroup", {}).get("memory_version") == 2 else
            "; cgroup v1 does not charge UDP socket buffers")
         + ")."),
        "",
        mem_table,
        "",
    ] if "memory" in workloads else []
    runs_n = meta.get("runs")
    table_md = "\n".join([
        f"# bootstorm benchmark: {meta['date']} on {meta['host']} ({meta['mode']} mode)",
        "",
        f"Median of {runs_n} run{'s' if runs_n != 1 else ''} per cell"
        + (" (min–max in parentheses)" if runs_n and runs_n > 1 else "")
        + f"; raw-UDP ceiling: {ceil_text}. `% ceil`: the cell's payload MB/s (median) as a "
        "fraction of the ceiling for its datagram size (a single sender and receiver thread: "
        "a multi-threaded server can exceed it). "
        f"Lockstep (ping-pong) ceiling, 32 flows each with one 4-byte ACK answered by one "
        f"DATA: {pp_text}. `% of ping-pong`, on the lockstep rows: the cell's blocks per second "
        "(median goodput / block size) as a fraction of the ping-pong's round trips per second "
        "(measured with 512-byte blocks for blocks of 1024 bytes and less, else 1468); small "
        "files and storms include their requests and first answers, and storms their arrival "
        "ramp. "
        "↑ higher is better, ↓ lower is better. "
        + ("Server CPU: from the server's own cgroup (every process and thread it has). "
           if meta.get("cgroup", {}).get("cpu_file") else
           "Server CPU: loadgen's reading of /proc/PID/stat (reaped children only). ")
        + "The last column is bootstorm against the best peer whose runs all finished cleanly; "
        "**> 1 always means bootstorm is better** (throughput: bootstorm / peer; makespan, "
        "CPU and memory: peer / bootstorm). ⚠ N failed: transfers loadgen counted as failed "
        "(most in one run).",
        "",
        table,
        "",
        *mem_section,
        "## Latency",
        "",
        lat_table,
        "",
        "## Failures and silent clients",
        "",
        "The target: no failure and no silent client. Per cell, the run with the most failed "
        "transfers: loadgen's count and causes (`timeout`: a request or block unanswered "
        "through all of the client's retries). silent: clients that got no answer at all. "
        "loadgen does not say at which request a timeout happened, so in closed-loop "
        "workloads this is a bound (at most the timeouts); in the PXELINUX storms every "
        "session's first request is its config-file miss, and the sessions that got no "
        "ERROR 1 for it and failed by timeout are exact (a range where other failures blur "
        "it).",
        "",
        fail_table,
        "",
        "## The load generator's share",
        "",
        "The load generator's own CPU time per second of the run and per load thread (median of "
        "runs), and per GiB delivered. Near 100% busy, it never waited for the server: on CPUs "
        "it shares with the server, that cell measures what the client can acknowledge as much "
        "as what the server can send, and no server could have finished much sooner there.",
        "",
        lg_table,
        "",
        "## What the peers negotiated",
        "",
        "A request for blksize 1468, windowsize 16, tsize and timeout 1, answered with:",
        "",
        "\n".join(neg_lines) or "(not probed)",
        "",
        "## Workloads",
        "",
        "\n".join(wl_lines),
        "",
    ])
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(table_md)

    # ---------------------------------------------------------------- CSVs
    raw_cols = ["round", "server", "workload", "status", "rc", "wall_s", "transfers_ok",
                "transfers_failed", "failures", "timeouts", "silent_min", "silent_max", "sessions", "misses", "bytes", "makespan_s",
                "goodput_mbps", "transfers_per_s", "retransmits", "dropped_on_purpose",
                "transfer_p50_ms", "transfer_p99_ms", "session_p50_ms", "session_p99_ms",
                "first_block_p50_ms", "cpu_s", "cpu_source", "cpu_s_per_gib",
                "loadgen_server_cpu_s_per_gib", "loadgen_cpu_s_per_gib", "loadgen_busy",
                "server_rss_kb", "mem_clients", "idle_pss_kb",
                "peak_pss_kb", "idle_rss_kb", "peak_rss_kb", "idle_cg_bytes", "peak_cg_bytes",
                "pss_per_transfer", "rss_per_transfer", "cg_per_transfer", "peak_procs",
                "peak_threads", "peak_fds", "args"]
    with open(os.path.join(out, "raw.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(raw_cols)
        for r in runs:
            lg = r.get("loadgen") or {}
            m = r.get("memory") or {}
            row = {
                "round": r["round"], "server": r["server"], "workload": r["workload"],
                "status": r["status"], "rc": r["rc"], "wall_s": r.get("wall_s"),
                "failures": json.dumps(lg.get("failures")) if lg.get("failures") else "",
                "timeouts": (lg.get("failures") or {}).get("timeout", 0) if lg else None,
                "silent_min": (silent_clients(r) or (None, None))[0],
                "silent_max": (silent_clients(r) or (None, None))[1],
                "transfer_p50_ms": (lg.get("transfer_ms") or {}).get("p50"),
                "transfer_p99_ms": (lg.get("transfer_ms") or {}).get("p99"),
                "session_p50_ms": (lg.get("session_ms") or {}).get("p50"),
                "session_p99_ms": (lg.get("session_ms") or {}).get("p99"),
                "first_block_p50_ms": (lg.get("first_block_ms") or {}).get("p50"),
                "cpu_s": r.get("cpu_s"), "cpu_source": r.get("cpu_source"),
                "cpu_s_per_gib": r.get("cpu_s_per_gib"),
                "loadgen_server_cpu_s_per_gib": lg.get("server_cpu_s_per_gib"),
                "loadgen_cpu_s_per_gib": lg.get("loadgen_cpu_s_per_gib"),
                "loadgen_busy": lg.get("loadgen_busy"),
                "mem_clients": m.get("clients"), "args": r.get("args"),
            }
            for k in ("transfers_ok", "transfers_failed", "sessions", "misses", "bytes",
                      "makespan_s", "goodput_mbps", "transfers_per_s", "retransmits",
                      "dropped_on_purpose", "server_rss_kb"):
                row[k] = lg.get(k)
            for k in ("idle_pss_kb", "peak_pss_kb", "idle_rss_kb", "peak_rss_kb",
                      "idle_cg_bytes", "peak_cg_bytes", "pss_per_transfer", "rss_per_transfer",
                      "cg_per_transfer", "peak_procs", "peak_threads", "peak_fds"):
                row[k] = m.get(k)
            w.writerow(["" if row.get(c) is None else row.get(c) for c in raw_cols])
    with open(os.path.join(out, "summary.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["workload", "metric", "server", "median", "min", "max", "runs", "statuses",
                    "failed_max", "fraction_of_ceiling", "fraction_of_pingpong"])
        for row in agg["rows"]:
            for s, c in row["cells"].items():
                w.writerow([row["workload"], row["metric"], s, c["median"], c["min"], c["max"],
                            c["runs"], " ".join(c["statuses"]), c["failed_max"],
                            "" if c["fraction_of_ceiling"] is None else c["fraction_of_ceiling"],
                            "" if c["fraction_of_pingpong"] is None else c["fraction_of_pingpong"]])
        for m in agg["memory"]:
            for key in ("pss_per_transfer", "cg_per_transfer"):
                w.writerow(["memory", key, m["server"], m[key]["median"], m[key]["min"],
                            m[key]["max"], len(m["statuses"]), " ".join(m["statuses"]), "", "",
                            ""])

    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"meta": meta, "aggregate": agg, "runs": runs}, f, indent=1)

    # ---------------------------------------------------------------- plot
    with open(os.path.join(out, "plot.svg"), "w") as f:
        f.write(plot_svg(meta, agg, servers, ceilings))

    # ---------------------------------------------------------------- README
    readme = "\n".join([
        f"# Benchmark run {meta['date']}-{meta['host']}",
        "",
        "Produced by `scripts/bench.sh` (see [docs/benchmarks.md](../../benchmarks.md)).",
        "",
        "## Command",
        "",
        "```sh",
        meta["command"],
        "```",
        "",
        f"Mode: {meta['mode']}, {runs_n} run(s) per cell, servers interleaved within each "
        f"round. Started {meta['started']}, finished {meta.get('finished', '?')} "
        f"(wall time {meta.get('wall_s', 0):.0f} s). Built from: "
        f"`{meta.get('git', '?')}`."
        + (f" bootstorm ran with `{meta['bootstorm_args']}` added to its command line."
           if meta.get("bootstorm_args") else "")
        + (f" bootstorm-sp ran with `--single-port {meta['single_port_args']}`."
           if meta.get("single_port_args") else ""),
        "",
        "## Machine",
        "",
        f"- host: {meta['host']}",
        f"- CPU: {meta['machine'].get('cpu_model')} ({meta['machine'].get('nproc')} CPUs "
        "available)",
        f"- memory: {meta['machine'].get('mem_total')}",
        f"- kernel: {meta['machine'].get('kernel')}",
        f"- open files limit (servers and loadgen): {meta['machine'].get('nofile')}",
        f"- cgroup: memory {meta.get('cgroup', {}).get('memory_file') or 'n/a'}, CPU "
        f"{meta.get('cgroup', {}).get('cpu_file') or 'n/a'}",
        "",
        "## Servers",
        "",
        "\n".join(f"- {k}: {v}" for k, v in sorted(
            meta.get("versions", {}).items(),
            key=lambda kv: (["bootstorm", "loadgen"] + SERVERS).index(kv[0])
            if kv[0] in ["bootstorm", "loadgen"] + SERVERS else 99)),
        "",
        "## Files",
        "",
        "- `table.md`: the tables below; `summary.csv`: median/min/max per cell;",
        "- `raw.csv`: one row per loadgen run; `results.json`: everything, loadgen's JSON "
        "included;",
        "- `plot.svg`: throughput per workload and server, latency per server.",
        "",
        "![plot](plot.svg)",
        "",
        table_md.split("\n", 2)[2],
    ])
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(readme)


def human_bytes(v):
    if v is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(v) < 1024 or unit == "GiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024.0
    return str(v)


# ----------------------------------------------------------------------------------------------
# SVG (no third-party libraries)


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def nice_scale(v):
    """(top, step) of an axis from 0 that holds v, with at most 5 steps of 1, 2 or 5 x 10^k."""
    if v <= 0:
        return 1.0, 0.25
    e = 10 ** math.floor(math.log10(v / 5))
    for m in (1, 2, 5, 10, 20):
        step = m * e
        if v / step <= 5:
            return step * math.ceil(v / step - 1e-9), step
    return v, v / 4


def short(v):
    if v is None:
        return ""
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def tick(v):
    return f"{v:,.0f}" if abs(v) >= 10 or v == int(v) else f"{v:g}"


def panel(x0, y0, w, h, title, subtitle, groups, unit="", ref=None):
    """groups: list of (label, [(server, value or None, note, failed, light)]); ref: (value,
    label) drawn as a dashed line (the raw-UDP ceiling)."""
    out = [f'<g transform="translate({x0},{y0})">',
           f'<text x="{w / 2}" y="12" text-anchor="middle" font-size="12" '
           f'font-weight="bold">{esc(title)}</text>',
           f'<text x="{w / 2}" y="25" text-anchor="middle" font-size="10" '
           f'fill="#444">{esc(subtitle)}</text>']
    left, top, bottom = 46, 36, 26
    ph = h - top - bottom
    pw = w - left - 8
    vals = [v for _, bars in groups for _, v, _, _, _ in bars if v is not None]
    vmax = max(vals) if vals else 1.0
    if ref is not None:
        vmax = max(vmax, ref[0])
    top_v, step = nice_scale(vmax)
    nt = int(round(top_v / step))
    for i in range(nt + 1):
        yv = step * i
        y = top + ph - ph * yv / top_v
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" '
                   f'stroke="#e4e4e4" stroke-width="1"/>')
        out.append(f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end" font-size="9" '
                   f'fill="#555">{esc(tick(yv))}</text>')
    out.append(f'<text x="11" y="{top + ph / 2}" font-size="9" fill="#555" text-anchor="middle" '
               f'transform="rotate(-90 11 {top + ph / 2})">{esc(unit)}</text>')
    ng = max(1, len(groups))
    gw = pw / ng
    for gi, (glabel, bars) in enumerate(groups):
        nb = max(1, len(bars))
        bw = min(30.0, (gw - 8) / nb)
        gx = left + gi * gw + (gw - bw * nb) / 2
        for bi, (server, v, note, failed, light) in enumerate(bars):
            x = gx + bi * bw
            color = COLORS.get(server, "#777")
            if v is None:
                out.append(f'<text x="{x + bw / 2:.1f}" y="{top + ph - 3}" font-size="10" '
                           f'text-anchor="middle" fill="{color}">×</text>')
                continue
            bh = max(0.5, ph * min(v, top_v) / top_v)
            y = top + ph - bh
            fill = f'url(#hatch-{server})' if failed else color
            op = ' fill-opacity="0.45"' if light and not failed else ""
            out.append(f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{bw - 2:.1f}" height="{bh:.1f}" '
                       f'fill="{fill}"{op} stroke="{color}"><title>{esc(server)}: {esc(short(v))} '
                       f'{esc(unit)}{esc(note)}</title></rect>')
            out.append(f'<text x="{x + bw / 2:.1f}" y="{y - 2:.1f}" font-size="8" '
                       f'text-anchor="middle" fill="#333">{esc(short(v))}{esc(note)}</text>')
        if glabel:
            out.append(f'<text x="{left + gi * gw + gw / 2:.1f}" y="{top + ph + 12}" '
                       f'font-size="9" text-anchor="middle">{esc(glabel)}</text>')
    if ref is not None:
        y = top + ph - ph * ref[0] / top_v
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#000" '
                   f'stroke-dasharray="4 3" stroke-width="1"/>')
        out.append(f'<text x="{left + pw - 2}" y="{y - 3:.1f}" font-size="8" text-anchor="end" '
                   f'fill="#000">{esc(ref[1])}</text>')
    out.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" '
               f'stroke="#333"/>')
    out.append("</g>")
    return "\n".join(out)


def plot_svg(meta, agg, servers, ceilings):
    W, PW, PH = 1100, 272, 220
    panels = []  # (title, subtitle, groups, unit, ref)
    for row in agg["rows"]:
        bars = []
        for s in servers:
            c = row["cells"].get(s)
            if c is None:
                continue
            failed = any(st != "ok" for st in c["statuses"])
            bars.append((s, c["median"], " ⚠" if failed and c["median"] is not None else "",
                         failed, False))
        ref = None
        if row.get("pingpong_mbps") and row["metric"] == "goodput_mbps":
            ref = (row["pingpong_mbps"], f"ping-pong {row['pingpong_mbps']:.0f}")
        elif row["ceiling_datagram"] and row["metric"] == "goodput_mbps":
            c = ceilings.get(row["ceiling_datagram"])
            # Only where the ceiling is within sight of the bars.
            vals = [b[1] for b in bars if b[1] is not None]
            if c and vals and max(vals) > c["median"] / 5:
                ref = (c["median"], f"raw UDP {c['median']:.0f}")
        sub = f"{row['label']}, {'higher' if row['better'] == 'higher' else 'lower'} is better"
        panels.append((WORKLOAD_TITLE[row["workload"]], sub, [("", bars)], row["label"], ref))
    for key, label, better, _ in MEM_ROWS:
        bars = []
        for m in agg["memory"]:
            v = m[key]["median"]
            failed = any(st != "ok" for st in m["statuses"])
            bars.append((m["server"], v, " ⚠" if failed and v is not None else "", failed, False))
        if bars:
            panels.append(("memory", f"{label}, lower is better", [("", bars)], "bytes", None))
    lat = {}
    for l in agg["latency"]:
        lat.setdefault((l["workload"], l["histogram"]), {})[l["server"]] = l
    for wl, hist, label in LATENCY:
        d = lat.get((wl, hist))
        if not d:
            continue
        g50 = [(s, d[s]["p50_ms"] if s in d else None, "", False, False) for s in servers]
        g99 = [(s, d[s]["p99_ms"] if s in d else None, "", False, True) for s in servers]
        panels.append((f"latency: {WORKLOAD_TITLE[wl]}", f"{hist.split('_')[0]} time, ms "
                       "(p50 solid, p99 light)", [("p50", g50), ("p99", g99)], "ms", None))

    cols = W // PW
    rows = (len(panels) + cols - 1) // cols
    H = 70 + rows * (PH + 12)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
             f'viewBox="0 0 {W} {H}" font-family="sans-serif">', '<defs>']
    for s, c in COLORS.items():
        parts.append(f'<pattern id="hatch-{s}" width="6" height="6" patternUnits="userSpaceOnUse" '
                     f'patternTransform="rotate(45)"><rect width="6" height="6" fill="white"/>'
                     f'<line x1="0" y1="0" x2="0" y2="6" stroke="{c}" stroke-width="3"/></pattern>')
    parts.append("</defs>")
    parts.append(f'<rect width="{W}" height="{H}" fill="white"/>')
    parts.append(f'<text x="10" y="20" font-size="15" font-weight="bold">bootstorm benchmark '
                 f'{esc(meta["date"])} on {esc(meta["host"])}: {esc(meta["mode"])} mode, median '
                 f'of {meta["runs"]} run(s)</text>')
    parts.append('<text x="10" y="36" font-size="10" fill="#444">hatched bar, ⚠: transfers '
                 'failed or the server crashed in some run; ×: no result; dashed line: raw-UDP '
                 'ceiling of the machine (lockstep rows: the ping-pong ceiling), measured in the '
                 'same run</text>')
    x = 10
    for s in MEM_SERVERS:
        name = SERVER_LABEL.get(s, s)
        parts.append(f'<rect x="{x}" y="46" width="12" height="12" fill="{COLORS[s]}"/>')
        parts.append(f'<text x="{x + 16}" y="56" font-size="11">{esc(name)}</text>')
        x += 30 + int(6.5 * len(name))
    for i, (title, sub, groups, unit, ref) in enumerate(panels):
        r, c = divmod(i, cols)
        parts.append(panel(10 + c * (PW + 2), 66 + r * (PH + 12), PW - 8, PH, title, sub, groups,
                           unit=unit, ref=ref))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("probe")
    q.add_argument("host")
    q.add_argument("port", type=int)
    q.add_argument("file")
    q = sub.add_parser("sample")
    q.add_argument("--pid", type=int, required=True)
    q.add_argument("--cgroup-procs")
    q.add_argument("--cg-mem")
    q.add_argument("--interval", type=float, default=0.25)
    q.add_argument("--out", required=True)
    q = sub.add_parser("record")
    q.add_argument("--round", type=int, required=True)
    q.add_argument("--server", required=True)
    q.add_argument("--workload", required=True)
    q.add_argument("--args", default="")
    q.add_argument("--rc", type=int, default=0)
    q.add_argument("--wall", type=float)
    q.add_argument("--timeout", type=float)
    q.add_argument("--stdout")
    q.add_argument("--stderr")
    q.add_argument("--crashed", type=int, default=0)
    q.add_argument("--start-failed", type=int, default=0)
    q.add_argument("--cpu-cg", type=float)
    q.add_argument("--samples")
    q.add_argument("--clients", type=int, default=0)
    q.add_argument("--idle-start", type=float, default=0)
    q.add_argument("--load-start", type=float, default=0)
    q.add_argument("--load-end", type=float, default=0)
    q.add_argument("--window-lo", type=float, default=0)
    q.add_argument("--window-hi", type=float, default=0)
    q = sub.add_parser("brief")
    q.add_argument("file")
    q.add_argument("--memory", action="store_true")
    q = sub.add_parser("report")
    q.add_argument("work")
    q.add_argument("out")
    a = p.parse_args()
    {"probe": cmd_probe, "sample": cmd_sample, "record": cmd_record, "brief": cmd_brief,
     "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
