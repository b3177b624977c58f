#!/usr/bin/env python3
"""Where a data-directory node's CPU goes with visit statistics on, thread by thread, under the
harness's load: figures that do not need a statistics-off run to compare with, so they are far
steadier on this VM than CPU per redirect is.

Starts `duanlian serve --data-dir DIR --threads 1` on core 0 (as the harness does) with the
harness's 1M-link snapshot, runs wrk on core 1 with the harness's request file (--rounds x
--duration s, 64 keep-alive connections), and prints the CPU each thread used meanwhile (the
process's total includes threads that ended, such as the gzip thread's), the redirects served,
and CPU per redirect. With --perf (needs `perf`) it also records core 0 during the second round
and prints the share of the core's samples in the functions of the click path and, for scale,
the snapshot's lookup.

usage: python3 benches/click-path.py [--bin PATH] [--links N] [--rounds R] [--duration S] [--perf]
       [--perf-out FILE] [-- EXTRA SERVE FLAGS]
PERF_FLAGS adds flags to `perf record` (PERF_FLAGS=-g for call graphs, to see who called a
kernel function).
"""
import argparse, os, re, shutil, subprocess, sys, tempfile, time, urllib.request

from harness_util import harness, link_set

CLK = os.sysconf("SC_CLK_TCK")


def cpu(stat_path):
    f = open(stat_path).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / CLK


def threads(pid):
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            out[(name, tid)] = cpu(f"/proc/{pid}/task/{tid}/stat")
        except OSError:
            pass
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/duanlian")
    ap.add_argument("--links", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--perf", action="store_true")
    ap.add_argument("--perf-out", help="keep the perf data here (for perf report, or to compare two runs)")
    ap.add_argument("extra", nargs="*")
    a = ap.parse_args()
    h = harness()
    work = os.path.join(os.environ.get("TMPDIR", "/tmp"), "duanlian-bench")
    reqfile, snap = link_set(h, a.bin, a.links, work)
    data = tempfile.mkdtemp(prefix="duanlian-clickpath-")
    port = h.free_port() if hasattr(h, "free_port") else 18080
    cmd = ["taskset", "-c", "0", a.bin, "serve", "--data-dir", data, "--snapshot", snap, "--listen",
           f"127.0.0.1:{port}", "--admin-listen", "127.0.0.1:0", "--threads", "1"] + a.extra
    srv = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                time.sleep(0.1)
        before, total0 = threads(srv.pid), cpu(f"/proc/{srv.pid}/stat")
        served = 0
        perf_data = os.path.join(data, "perf.data")
        for r in range(a.rounds):
            rec = None
            if a.perf and r == 1:
                rec = subprocess.Popen(["perf", "record", "-q", "-C", "0", "-o", perf_data] + os.environ.get("PERF_FLAGS", "").split() + ["--", "sleep",
                                        str(max(a.duration - 2, 1))], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            env = dict(os.environ, REQUESTS_FILE=reqfile, CONNECTION_CLOSE="0")
            out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c64", f"-d{a.duration}s", "--latency", "-s",
                                  os.path.join(os.path.dirname(h.__file__), "replay.lua"), f"http://127.0.0.1:{port}"],
                                 env=env, capture_output=True, text=True, check=True).stdout
            served += int(re.search(r"(\d+) requests in", out).group(1))
            p99 = re.search(r"99%\s+(\S+)", out).group(1)
            print(f"round {r + 1}: {out.split('Requests/sec:')[1].split()[0]} req/s, p99 {p99}")
            if rec:
                rec.wait()
        after, total1 = threads(srv.pid), cpu(f"/proc/{srv.pid}/stat")
    finally:
        srv.terminate()
        srv.wait(10)
    total = total1 - total0
    print(f"{'thread':<20}{'CPU ms':>8}{'share':>8}")
    for key in sorted(after, key=lambda k: -(after[k] - before.get(k, 0))):
        used = after[key] - before.get(key, 0)
        if used > 0:
            print(f"{key[0]:<20}{used * 1000:>8.0f}{used / total:>8.1%}")
    gone = total - sum(after[k] - before.get(k, 0) for k in after)
    print(f"{'(threads that ended)':<20}{gone * 1000:>8.0f}{gone / total:>8.1%}")
    print(f"{'process':<20}{total * 1000:>8.0f}   {served} redirects, {total / served * 1e6:.2f} us CPU each")
    if a.perf:
        rep = subprocess.run(["perf", "report", "-i", perf_data, "--no-children", "--stdio", "--sort", "sym"],
                             capture_output=True, text=True).stdout
        print("perf, core 0, share of samples:")
        picked = 0.0
        for line in rep.splitlines():
            m = re.match(r"\s+([\d.]+)%\s+\[.\]\s+(.*)", line)
            if m and re.search(r"duanlian_clicks|Snapshot::record", m.group(2)):
                print(f"  {m.group(1):>6}%  {m.group(2)}")
                if "duanlian_clicks" in m.group(2):
                    picked += float(m.group(1))
        print(f"  {picked:6.2f}%  all of duanlian_clicks")
        if a.perf_out:
            shutil.copyfile(perf_data, a.perf_out)
    shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
