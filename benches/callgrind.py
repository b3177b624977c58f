#!/usr/bin/env python3
"""Instructions per redirect under `valgrind --tool=callgrind`: repeatable where wall-clock and
CPU-time figures on this VM are not (the same binary gives the same count, whatever else runs).

Starts `duanlian serve --threads 1` (or the `bench-floor` example with --floor) under callgrind,
sends --warm requests from the harness's sample over --conns keep-alive connections (64), zeroes the
counters, sends --count more, dumps, and prints instructions per request. With --annotate it
also prints, per request, the functions and the source files that executed the most
instructions themselves in the measured part. (Files follow inlining: with fat LTO most of the
request path is inlined into a few functions, so the file a line came from says more than the
function it ended up in. callgrind_annotate puts it all under one caller.) Two profiles'
tables, subtracted, show where a change's instructions went.

usage: python3 benches/callgrind.py [--links N] [--count N] [--warm N] [--conns N] [--floor] [--annotate]
       [--bin PATH] [-- EXTRA SERVE FLAGS]
Needs valgrind (Debian: valgrind) and the harness's link set (generated like the harness does).
"""
import argparse, glob, os, re, socket, subprocess, sys, tempfile
from collections import Counter

from harness_util import floor_binary, harness, link_set


def send(port, lines, count, conns):
    """`count` GETs round-robin over `lines`, spread over `conns` keep-alive connections that each
    have one request in flight at a time, as wrk's connections do (so the server finds several
    ready at each wake-up, and its per-wake-up costs are shared as under load). Returns the
    statuses seen."""
    socks = []
    for _ in range(conns):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append([s, b""])
    statuses = {}
    sent = 0
    while sent < count:
        batch = socks[:count - sent]
        for s, _ in batch:
            host, path = lines[sent % len(lines)]
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            sent += 1
        for conn in batch:
            s, buf = conn
            while True:
                end = buf.find(b"\r\n\r\n")
                if end >= 0:
                    head = buf[:end].decode("latin-1")
                    m = re.search(r"(?im)^content-length:\s*(\d+)", head)
                    total = end + 4 + (int(m.group(1)) if m else 0)
                    if len(buf) >= total:
                        status = int(head.split(" ", 2)[1])
                        statuses[status] = statuses.get(status, 0) + 1
                        conn[1] = buf[total:]
                        break
                chunk = s.recv(65536)
                if not chunk:
                    sys.exit("server closed the connection")
                buf += chunk
    for s, _ in socks:
        s.close()
    return statuses


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--links", type=int, default=1_000_000)
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--warm", type=int, default=2_000)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--floor", action="store_true", help="measure the bench-floor example instead")
    ap.add_argument("--annotate", action="store_true")
    ap.add_argument("--cache", action="store_true",
                    help="simulate the caches too (this VM's 48 KiB L1d and a 2 MiB L2 as the last level) "
                         "and print the data misses per request: memory a change drags through the core's "
                         "caches, which the instruction count does not show")
    ap.add_argument("--bin", default="target/release/duanlian")
    ap.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "duanlian-bench"))
    ap.add_argument("extra", nargs="*", help="more `serve` flags (after --)")
    a = ap.parse_args()
    h = harness()
    reqfile, snap = link_set(h, a.bin, a.links, a.work)
    lines = [l.rstrip("\n").split("\t") for l in open(reqfile)]
    port = h.free_port()
    if a.floor:
        cmd = [floor_binary(a.bin), "--listen", f"127.0.0.1:{port}", "--threads", "1"]
    else:
        cmd = [a.bin, "serve", "--snapshot", snap, "--listen", f"127.0.0.1:{port}",
               "--admin-listen", f"127.0.0.1:{h.free_port()}", "--threads", "1"] + a.extra
    out = tempfile.mkdtemp(prefix="duanlian-callgrind-")
    prof = os.path.join(out, "callgrind.out")
    sim = ["--cache-sim=yes", "--D1=49152,12,64", "--LL=2097152,16,64"] if a.cache else []
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={prof}"] + sim + cmd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        host, path = lines[0]
        h.wait_ready(port, host, path, proc)
        send(port, lines, a.warm, a.conns)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, stdout=subprocess.DEVNULL)
        statuses = send(port, lines, a.count, a.conns)
        subprocess.run(["callgrind_control", "-d", "measured", str(proc.pid)], check=True,
                       stdout=subprocess.DEVNULL)
    finally:
        proc.terminate()
        proc.wait(60)
    dumps = [p for p in glob.glob(prof + "*")
             if re.search(r"^desc: Trigger: .*\bmeasured$", open(p, errors="replace").read(4096), re.M)]
    if not dumps:
        sys.exit(f"no dump named 'measured' in {out}")
    text = open(dumps[0], errors="replace").read()
    events = re.search(r"^events:\s+(.*)$", text, re.M).group(1).split()
    counts = dict(zip(events, map(int, re.search(r"^(?:summary|totals):\s+(.*)$", text, re.M).group(1).split())))
    total = counts["Ir"]
    what = "floor" if a.floor else "redirect"
    print(f"{what}: {total / a.count:.0f} instructions per request over {a.count} requests "
          f"(statuses {statuses}); profile {dumps[0]}")
    if a.cache:
        per = {k: v / a.count for k, v in counts.items()}
        print(f"data misses per request: L1 {per['D1mr'] + per['D1mw']:.1f} (reads {per['D1mr']:.1f}), "
              f"L2 {per['DLmr'] + per['DLmw']:.2f} (reads {per['DLmr']:.2f}); "
              f"instruction L1 misses {per['I1mr']:.1f}")
    if a.annotate:
        by_fn, by_file = self_costs(dumps[0])
        for title, table in (("function", by_fn), ("source file", by_file)):
            print(f"instructions per request by {title} (self):")
            for name, ir in table.most_common(25):
                print(f"{ir / a.count:9.1f}  {name}")


def self_costs(path):
    """Self instructions by function and by source file (inlined code under its own file) from
    a callgrind dump: cost lines after `calls=` are a callee's inclusive cost and are skipped."""
    names, by_fn, by_file = {}, Counter(), Counter()

    def named(kind, v):
        m = re.match(r"\((\d+)\)(?:\s+(.*))?", v)
        if not m:
            return v
        if m.group(2):
            names[(kind, m.group(1))] = m.group(2)
        return names.get((kind, m.group(1)), v)

    fl = fi = fn = None
    after_call = False
    for line in open(path, errors="replace"):
        if line.startswith("fl="):
            fl, fi = named("fl", line[3:].strip()), None
        elif line.startswith(("fi=", "fe=")):
            fi = named("fl", line[3:].strip())
        elif line.startswith("fn="):
            fn, fi = named("fn", line[3:].strip()), None
        elif line.startswith(("cfl=", "cfi=")):
            named("fl", line[4:].strip())
        elif line.startswith("cfn="):
            named("fn", line[4:].strip())
        elif line.startswith("calls="):
            after_call = True
        elif line[:1].isdigit() or line[:1] in ("+", "-", "*"):
            parts = line.split()
            if after_call:
                after_call = False
            elif len(parts) >= 2 and parts[1].isdigit():
                by_fn[fn] += int(parts[1])
                by_file[fi or fl] += int(parts[1])
    return by_fn, by_file

if __name__ == "__main__":
    main()
