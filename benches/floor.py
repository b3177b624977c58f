#!/usr/bin/env python3
"""duanlian against its own floor: the same hyper server answering one fixed 302 without any
lookup (the `bench-floor` example, built if missing). Both get one core and one thread, wrk runs on the other core and
replays the same requests; server CPU per request is read from /proc, as in
../shared/bench/redirect-vs-nginx.py, whose helpers this script uses.

usage: python3 benches/floor.py [--links N] [--duration S] [--conns C] [--rounds R] [--bin PATH]
Targets (issue 5): a real redirect costs at most 1.05x the floor in CPU per request and 1.2x in
user time.
"""
import argparse, os, statistics, subprocess

from harness_util import floor_binary, harness, link_set

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--links", type=int, default=1_000_000)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bin", default="target/release/duanlian")
    ap.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "duanlian-bench"))
    a = ap.parse_args()
    h = harness()
    h.ensure_tools()
    reqfile, snap = link_set(h, a.bin, a.links, a.work)
    host, path = open(reqfile).readline().rstrip("\n").split("\t")
    pr, pf = h.free_port(), h.free_port()
    real = subprocess.Popen(["taskset", "-c", "0", a.bin, "serve", "--snapshot", snap, "--listen", f"127.0.0.1:{pr}",
                             "--admin-listen", f"127.0.0.1:{h.free_port()}", "--threads", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    floor = subprocess.Popen(["taskset", "-c", "0", floor_binary(a.bin), "--listen", f"127.0.0.1:{pf}", "--threads", "1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        h.wait_ready(pr, host, path, real)
        h.wait_ready(pf, host, path, floor)
        res = {"floor": [], "duanlian": []}
        for _ in range(a.rounds):
            res["floor"].append(h.wrk(pf, reqfile, a.duration, a.conns, floor.pid))
            res["duanlian"].append(h.wrk(pr, reqfile, a.duration, a.conns, real.pid))
        med = {k: {m: statistics.median(r[m] for r in v) for m in ("rps", "p99_us", "cpu_us", "user_us", "sys_us")}
               for k, v in res.items()}
        print(f"links={a.links} conns={a.conns} rounds={a.rounds}x{a.duration}s")
        print(f"{'':10}{'req/s':>10}{'p99 us':>9}{'cpu us/req':>12}{'user':>7}{'sys':>7}")
        for k in ("floor", "duanlian"):
            m = med[k]
            print(f"{k:10}{m['rps']:>10.0f}{m['p99_us']:>9.0f}{m['cpu_us']:>12.2f}{m['user_us']:>7.2f}{m['sys_us']:>7.2f}")
        print(f"cpu_vs_floor={med['duanlian']['cpu_us'] / med['floor']['cpu_us']:.3f} "
              f"user_vs_floor={med['duanlian']['user_us'] / med['floor']['user_us']:.3f}")
    finally:
        for p in (real, floor):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

if __name__ == "__main__":
    main()
