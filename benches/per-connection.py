#!/usr/bin/env python3
"""What one fresh connection costs each server: system calls (strace) and user-space
instructions (callgrind), per one-request connection with `Connection: close`.

The servers, link set and configurations are benches/compare.py's (duanlian `serve --threads 1`,
nginx with one process, HAProxy with one thread). The client opens one connection at a time
(connect, `GET /code` with `Connection: close`, read to EOF, close), so this is the cost of a
connection in isolation: under load (benches/compare.py --mode close) a server finds several
connections ready per wake-up and shares its per-wake-up calls among them.

syscalls: the server runs normally; after --warm connections `strace -f -c -qq -p PID` attaches
to all its threads, --strace-count connections are made, strace detaches and its counts are
divided by the connections. Then strace attaches again for as long (2 s at least) with no traffic, to show
what the server does by itself (timers, background threads).

instructions: the server runs under `valgrind --tool=callgrind --instr-atstart=no` (so nginx's
map loads at ~5x native instead of ~50x), `callgrind_control -i on` once it answers, --warm
connections, `callgrind_control -z`, --count connections, `callgrind_control -d measured`; the
dump's total of instructions executed (user space, all threads), divided by --count.

usage: python3 benches/per-connection.py [--links N] [--servers duanlian,nginx,haproxy]
           [--what strace,callgrind] [--warm N] [--count N] [--strace-count N] [--annotate N]
           [--bin PATH] [--peer-defer-accept]
Needs strace, valgrind (callgrind_control), nginx and haproxy; installs nothing.
"""
import argparse
import glob
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (benches/compare.py: the link set, the servers, the client)


def connections(port, sample, n, start=0):
    """`n` sequential one-request connections over `sample` from `start`; returns {status: n}."""
    statuses = {}
    for i in range(start, start + n):
        host, path = sample[i % len(sample)]
        status, _ = compare.exchange(port, host, path, timeout=60)
        statuses[status] = statuses.get(status, 0) + 1
    return statuses


def tasks(pid):
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


def traced(pid):
    """Whether every thread of `pid` has a tracer."""
    for tid in tasks(pid):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                if int(re.search(r"^TracerPid:\s+(\d+)", f.read(), re.M).group(1)) == 0:
                    return False
        except FileNotFoundError:
            pass
    return True


def strace_counts(pid, out, during):
    """Attaches strace to all threads of `pid`, runs `during()`, detaches; returns
    ({syscall: (calls, errors)}, what during() returned, seconds attached)."""
    st = subprocess.Popen(["strace", "-f", "-c", "-qq", "-U", "calls,errors,name", "-S", "calls",
                           "-o", out, "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    while not traced(pid):
        if time.monotonic() - t0 > 10:
            st.kill()
            sys.exit("strace did not attach (ptrace not permitted?)")
        time.sleep(0.01)
    time.sleep(0.1)
    t1 = time.monotonic()
    result = during()
    took = time.monotonic() - t1
    st.send_signal(signal.SIGINT)
    st.wait(30)
    counts = {}
    for line in open(out):
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            calls, name = int(parts[0]), parts[-1]
            errors = int(parts[1]) if len(parts) == 3 else 0
            if name != "total":
                counts[name] = (calls, errors)
    return counts, result, took


def run_strace(names, a, work, data, snap, sample):
    table = {}
    for name in names:
        s = compare.start(name, work, data, a.bin, snap, defer=a.peer_defer_accept)
        try:
            s.wait_ready(*sample[0])
            connections(s.port, sample, a.warm)
            counts, statuses, took = strace_counts(
                s.pid, os.path.join(work, f"strace-{name}.txt"),
                lambda: connections(s.port, sample, a.strace_count, a.warm))
            idle, _, idle_s = strace_counts(s.pid, os.path.join(work, f"strace-{name}-idle.txt"),
                                            lambda: time.sleep(max(took, 2.0)))
            table[name] = (counts, statuses, took, idle, idle_s, len(tasks(s.pid)))
        finally:
            s.stop()
    n = a.strace_count
    print(f"\nsystem calls per connection ({n} sequential one-request connections after {a.warm}; "
          f"errors in brackets, mostly EAGAIN)")
    calls = sorted({c for t in table.values() for c in t[0]},
                   key=lambda c: -max(t[0].get(c, (0, 0))[0] for t in table.values()))
    print(f"{'':16}" + "".join(f"{k:>14}" for k in table))
    for c in calls:
        cells = []
        for k in table:
            v, e = table[k][0].get(c, (0, 0))
            per = f"{v / n:.2f}" if v >= n / 100 else "<0.01"
            cells.append(per + (f" [{e / n:.2f}]" if e >= n / 100 else "") if v else "-")
        print(f"{c:16}" + "".join(f"{x:>14}" for x in cells))
    print(f"{'total':16}" + "".join(f"{sum(v for v, _ in t[0].values()) / n:>14.2f}" for t in table.values()))
    for k, (_, statuses, took, idle, idle_s, threads) in table.items():
        total = sum(v for v, _ in idle.values())
        top = ", ".join(f"{c} {v}" for c, (v, _) in sorted(idle.items(), key=lambda x: -x[1][0])[:4])
        print(f"{k}: {threads} threads; statuses {statuses}; {took:.1f}s traced; then {idle_s:.1f}s idle: "
              f"{total} calls{' (' + top + ')' if top else ''}")


def run_callgrind(names, a, work, data, snap, sample):
    out = tempfile.mkdtemp(prefix="per-connection-callgrind-", dir=work)
    results = {}
    for name in names:
        prof = os.path.join(out, f"callgrind.{name}")
        wrap = ("valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={prof}.%p")
        s = compare.start(name, work, data, a.bin, snap, wrap=wrap, defer=a.peer_defer_accept)
        try:
            t0 = time.monotonic()
            s.wait_ready(*sample[0], limit=3600)
            load_s = time.monotonic() - t0
            subprocess.run(["callgrind_control", "-i", "on", str(s.pid)], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            connections(s.port, sample, a.warm)
            subprocess.run(["callgrind_control", "-z", str(s.pid)], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            t1 = time.monotonic()
            statuses = connections(s.port, sample, a.count, a.warm)
            took = time.monotonic() - t1
            subprocess.run(["callgrind_control", "-d", "measured", str(s.pid)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            s.stop()
        dumps = [p for p in glob.glob(prof + ".*")
                 if re.search(r"^desc: Trigger: .*\bmeasured$", open(p, errors="replace").read(4096), re.M)]
        if not dumps:
            sys.exit(f"{name}: no dump named 'measured' in {out}; see {s.log}")
        total = 0
        for p in dumps:
            m = re.search(r"^(?:summary|totals):\s+(\d+)", open(p, errors="replace").read(), re.M)
            total += int(m.group(1))
        results[name] = (total, statuses, load_s, took, dumps)
    print(f"\nuser-space instructions per connection (callgrind; {a.count} sequential one-request "
          f"connections after {a.warm})")
    for name, (total, statuses, load_s, took, dumps) in results.items():
        print(f"{name:10}{total / a.count:>10.0f}   statuses {statuses}; ready under valgrind in {load_s:.0f}s; "
              f"{a.count / took:.0f} connections/s; {' '.join(dumps)}")
    if "duanlian" in results:
        d = results["duanlian"][0]
        print(" ".join(f"vs_{k}={d / v[0]:.3f}" for k, v in results.items() if k != "duanlian"))
    for name, (total, _, _, _, dumps) in results.items() if a.annotate else ():
        print(f"\n{name}: the functions that executed the most, instructions per connection (self)")
        ann = subprocess.run(["callgrind_annotate", "--inclusive=no", f"--threshold=95"] + dumps,
                             capture_output=True, text=True).stdout
        rows = [r for r in ann.splitlines() if re.match(r"^\s*[\d,]+ \(", r) or re.match(r"^\s*[\d,]+\s+\S", r)]
        for r in rows[1:a.annotate + 1]:
            n, rest = r.split(None, 1)
            rest = re.sub(r"^\([^)]*\)\s*", "", rest)
            m = re.match(r"^[^:]*:(.*?)(?: \[(.*)\])?$", rest)  # file:function [object]
            if m:
                rest = m.group(1) + (f"  [{os.path.basename(m.group(2))}]" if m.group(2) else "")
            print(f"{int(n.replace(',', '')) / a.count:>10.0f}  {rest[:140]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--links", type=int, default=1_000_000, help="links in the set (default 1000000)")
    ap.add_argument("--servers", default="duanlian,nginx,haproxy")
    ap.add_argument("--what", default="strace,callgrind", help="strace, callgrind or both (default)")
    ap.add_argument("--warm", type=int, default=500, help="connections before measuring (default 500)")
    ap.add_argument("--count", type=int, default=3000, help="connections measured by callgrind (default 3000)")
    ap.add_argument("--strace-count", type=int, default=2000, help="connections measured by strace (default 2000)")
    ap.add_argument("--annotate", type=int, default=0, metavar="N",
                    help="also list the N functions that executed the most, per server")
    ap.add_argument("--bin", default="target/release/duanlian")
    ap.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "duanlian-compare"))
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--peer-defer-accept", action="store_true",
                    help="nginx `listen ... deferred`, HAProxy `bind ... defer-accept` (see compare.py)")
    a = ap.parse_args()
    names = [n for n in a.servers.split(",") if n]
    what = {w for w in a.what.split(",") if w}
    if not set(names) <= {"duanlian", "nginx", "haproxy"} or not what <= {"strace", "callgrind"}:
        sys.exit("--servers: of duanlian,nginx,haproxy; --what: of strace,callgrind")
    need = ["taskset"] + [n for n in names if n != "duanlian"]
    need += ["strace"] if "strace" in what else []
    need += ["valgrind", "callgrind_control"] if "callgrind" in what else []
    compare.require(need)
    os.makedirs(a.work, exist_ok=True)
    data = compare.link_set(a.work, a.links, a.seed)
    sample = compare.requests(data)
    snap, _ = compare.snapshot(a.bin, data, a.work, a.links, a.seed)
    print(f"links={a.links}; bin {compare.describe_bin(a.bin)}"
          + ("; peers with TCP_DEFER_ACCEPT" if a.peer_defer_accept else ""))
    if "strace" in what:
        run_strace(names, a, a.work, data, snap, sample)
    if "callgrind" in what:
        run_callgrind(names, a, a.work, data, snap, sample)


if __name__ == "__main__":
    main()
