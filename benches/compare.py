#!/usr/bin/env python3
"""duanlian against nginx (and HAProxy) serving the same links: CPU per redirect, self-contained.

Generates a deterministic synthetic link set (two link domains, --links links, a sample of
100,000 requests), builds a snapshot with `duanlian snapshot build`, and starts, each on core 0
with one worker:
  duanlian  `serve --snapshot FILE --threads 1` (read-only)
  nginx     one process (`daemon off; master_process off;`), `map $host$uri $target`,
            `return 302 $target`, 404 when the map has nothing
  haproxy   `nbthread 1`, the same links in a map file, keyed on the Host header lower-cased and
            without its port (as nginx's $host and duanlian see it) followed by the path
It checks that all of them answer a sample of hits and misses with the same status and the same
Location, then runs wrk on core 1 against each in turn, --rounds times (the order rotates every
round), and prints per server the median of requests/s, server CPU per redirect (user, system,
total; from /proc/PID/stat, all threads, before and after each wrk run), p50 and p99 latency,
time to the first answer and RSS, then the ratios of duanlian's to each peer's.

--mode keepalive: --conns (64) keep-alive connections, many redirects each (an L7 load
balancer's pool). --mode close: every request carries `Connection: close`, so every redirect is
a new TCP connection (what browsers behind an L4 balancer send).

usage: python3 benches/compare.py [--links N] [--duration S] [--rounds R] [--mode keepalive|close]
                                  [--peers nginx[,haproxy]] [--conns C] [--bin PATH] [--work DIR]
                                  [--peer-defer-accept]
Needs nginx, wrk and taskset (and haproxy with --peers nginx,haproxy); installs nothing: when one
is missing it prints the apt-get command and exits with status 2. Generated files are kept under
--work (default $TMPDIR/duanlian-compare) and reused by later runs with the same --links.
CPU times on a shared 2-core VM move by up to ~10% between runs: compare servers within a run.
The last line is machine-readable (ratios to nginx); with HAProxy the line before it starts
with `vs_haproxy:`.
"""
import argparse
import hashlib
import os
import random
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DOMAINS = ("s.example.com", "go.example.cn")
ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
CODE_LEN = 7
CODE_SPACE = 36 ** CODE_LEN
# i -> (i * CODE_MULT + offset) mod 36^7 is a bijection (CODE_MULT is prime to 2 and 3), so codes
# never repeat and no set of seen codes is needed, even at 10M links. Codes are lower-case only:
# nginx's map matches keys case-insensitively, duanlian does not.
CODE_MULT = 0x9E3779B1 % CODE_SPACE
DATA_VERSION = "1"
SAMPLE = 100_000
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
TOOLS = {"nginx": "nginx-light", "haproxy": "haproxy", "wrk": "wrk", "taskset": "util-linux",
         "strace": "strace", "valgrind": "valgrind", "callgrind_control": "valgrind"}


# ---------------------------------------------------------------------------------------------
# tools

def tool(name):
    """Path of `name` (PATH, then /usr/sbin and /sbin, where Debian puts nginx and haproxy)."""
    path = shutil.which(name)
    if path:
        return path
    for d in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return None


def require(names):
    """Exit with status 2 and the apt-get command that installs them when any of `names` is
    missing. Nothing is installed here."""
    missing = [n for n in names if not tool(n)]
    if missing:
        pkgs = sorted({TOOLS.get(n, n) for n in missing})
        sys.stderr.write(f"missing: {', '.join(missing)}\ninstall with:\n"
                         f"  sudo apt-get install -y {' '.join(pkgs)}\n")
        sys.exit(2)


def describe_bin(path):
    """`path (sha256 prefix, mtime)`: which binary a run measured."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    mtime = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(path)))
    return f"{path} (sha256 {h.hexdigest()[:12]}, {mtime})"


def load_warning():
    """A warning when something else uses the CPUs: one second of /proc/stat, both cores."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]
    t0, i0 = sample()
    time.sleep(1)
    t1, i1 = sample()
    busy = 1 - (i1 - i0) / max(t1 - t0, 1)
    if busy > 0.15:
        return (f"WARNING: the machine is {busy:.0%} busy before the run (load {open('/proc/loadavg').read().split()[0]});"
                f" figures will be noisier than usual")
    return None


# ---------------------------------------------------------------------------------------------
# the link set

def _mix(x):
    """splitmix64's finaliser: a well-spread 64-bit value from a counter."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def link(i, seed=42):
    """Link number `i` of the set: (domain, code, url), the same for a given seed everywhere."""
    h = _mix(i ^ (seed << 40))
    n = (i * CODE_MULT + _mix(seed) % CODE_SPACE) % CODE_SPACE
    code = []
    for _ in range(CODE_LEN):
        n, r = divmod(n, 36)
        code.append(ALPHABET[r])
    url = (f"https://shop.example.com/item/{(h >> 1) % 1_000_000_000}"
           f"?utm_source=sms&utm_campaign=c{(h >> 40) % 1000}")
    return DOMAINS[h & 1], "".join(code), url


def link_set(work, links, seed=42):
    """The directory with the link set, generated if missing:
    links.csv (`domain,code,url`, the bulk-import format), requests.txt (SAMPLE lines
    `host<TAB>/code`, links drawn at random, in random order), nginx-map.conf (`"host/code" "url";`)
    and haproxy.map (`host/code url`)."""
    if links > CODE_SPACE:
        sys.exit(f"--links: at most {CODE_SPACE}")
    data = os.path.join(work, f"links-{links}-seed{seed}")
    done = os.path.join(data, "complete")
    if os.path.exists(done) and open(done).read() == DATA_VERSION:
        return data
    os.makedirs(data, exist_ok=True)
    t0 = time.monotonic()
    sys.stderr.write(f"generating {links} links into {data} ...\n")
    files = {n: open(os.path.join(data, n + ".tmp"), "w") for n in ("links.csv", "nginx-map.conf", "haproxy.map")}
    csv, ngx, hap = files["links.csv"], files["nginx-map.conf"], files["haproxy.map"]
    csv.write("domain,code,url\n")
    for i in range(links):
        dom, code, url = link(i, seed)
        csv.write(f"{dom},{code},{url}\n")
        ngx.write(f'"{dom}/{code}" "{url}";\n')
        hap.write(f"{dom}/{code} {url}\n")
    rnd = random.Random(seed)
    with open(os.path.join(data, "requests.txt.tmp"), "w") as f:
        for i in rnd.sample(range(links), min(SAMPLE, links)):
            dom, code, _ = link(i, seed)
            f.write(f"{dom}\t/{code}\n")
    for n, f in files.items():
        f.close()
    for n in list(files) + ["requests.txt"]:
        os.replace(os.path.join(data, n + ".tmp"), os.path.join(data, n))
    with open(done, "w") as f:
        f.write(DATA_VERSION)
    sys.stderr.write(f"generated in {time.monotonic() - t0:.1f}s\n")
    return data


def requests(data):
    """The request sample: [(host, path)]."""
    with open(os.path.join(data, "requests.txt")) as f:
        return [tuple(line.rstrip("\n").split("\t")) for line in f]


def probes(sample):
    """Requests whose answers must agree: hits, and misses of several kinds. (Not part of it:
    query strings, which duanlian adds to the target and nginx's `return 302 $target` drops;
    codes differing only by case, which nginx's map matches case-insensitively; a Host with a
    trailing dot, which the HAProxy configuration does not strip.)"""
    hits = sample[:300]
    out = list(hits)
    for host, path in hits[:40]:
        out += [(host, path[:-1] + ("x" if path[-1] != "x" else "y")),   # most likely unknown
                (host, path + "/"), (host, path + "/more"), (host.upper(), path),
                (host + ":80", path), (DOMAINS[1] if host == DOMAINS[0] else DOMAINS[0], path)]
    out += [("unknown.example", hits[0][1]), (hits[0][0], "/"), (hits[0][0], "/favicon.ico")]
    return out


def snapshot(binary, data, work, links, seed=42):
    """Builds the snapshot with `binary` (every run: the format follows the binary). Returns
    (path, seconds)."""
    snap = os.path.join(work, f"links-{links}-seed{seed}.snap")
    t0 = time.monotonic()
    subprocess.run([binary, "snapshot", "build", "--input", os.path.join(data, "links.csv"), "--output", snap],
                   check=True, stdout=subprocess.DEVNULL)
    return snap, time.monotonic() - t0


# ---------------------------------------------------------------------------------------------
# servers

def free_port(_taken=set()):
    """A free port on 127.0.0.1, never the same one twice in a run: several servers may be
    given theirs before any of them binds it."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _taken:
            _taken.add(port)
            return port


def nginx_conf(work, port, mapfile, defer=False):
    """One worker (`daemon off; master_process off;` come from the command line, see
    `server_cmd`), no access log, the links in a `map`, 302 to the target, 404 otherwise.
    `defer`: `listen ... deferred` (TCP_DEFER_ACCEPT)."""
    d = os.path.join(work, f"nginx-{port}")
    os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
    conf = os.path.join(d, "nginx.conf")
    tmp = os.path.join(d, "tmp")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  server_tokens off;
  keepalive_requests 1000000000;
  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  map_hash_max_size 67108864;
  map_hash_bucket_size 256;
  map $host$uri $target {{
    default "";
    include {mapfile};
  }}
  server {{
    listen 127.0.0.1:{port} backlog=4096{" deferred" if defer else ""};
    location / {{
      if ($target = "") {{ return 404; }}
      return 302 $target;
    }}
  }}
}}
""")
    return d, conf


def haproxy_conf(work, port, mapfile, defer=False):
    """One thread; the map is keyed on `host/code` with the Host lower-cased and without its port,
    as nginx's $host and duanlian take it (HAProxy's `base` would keep both). `defer`:
    `bind ... defer-accept` (TCP_DEFER_ACCEPT)."""
    d = os.path.join(work, f"haproxy-{port}")
    os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, "haproxy.cfg")
    with open(conf, "w") as f:
        f.write(f"""global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout client 60s
  timeout server 60s
  timeout connect 5s
  timeout http-keep-alive 75s
  option http-keep-alive
frontend redirects
  bind 127.0.0.1:{port} backlog 4096{" defer-accept" if defer else ""}
  http-request set-var(txn.path) path
  http-request set-var(txn.target) req.hdr(host),lower,field(1,:),concat(,txn.path),map({mapfile})
  http-request redirect location %[var(txn.target)] code 302 if {{ var(txn.target) -m found }}
  http-request return status 404
""")
    return d, conf


class Server:
    """One server under test: its name, port, process and where its output goes."""

    def __init__(self, name, port, cmd, log, wrap=()):
        self.name, self.port, self.cmd, self.log = name, port, cmd, log
        self.started = time.monotonic()
        self.out = open(log, "w")
        self.proc = subprocess.Popen(list(wrap) + cmd, stdout=self.out, stderr=subprocess.STDOUT)
        self.ready_s = None

    @property
    def pid(self):
        return self.proc.pid

    def wait_ready(self, host, path, limit=900):
        """Seconds from spawn to the first 3xx for (host, path)."""
        while time.monotonic() - self.started < limit:
            if self.proc.poll() is not None:
                self.out.flush()
                sys.exit(f"{self.name} exited with {self.proc.returncode}; see {self.log}:\n"
                         + open(self.log, errors="replace").read()[-2000:])
            try:
                if 300 <= exchange(self.port, host, path, timeout=2)[0] < 400:
                    self.ready_s = time.monotonic() - self.started
                    return self.ready_s
            except OSError:
                pass
            time.sleep(0.01)
        sys.exit(f"{self.name} not ready after {limit}s; see {self.log}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()


def server_cmd(name, port, work, data, binary, snap, defer=False):
    """The command line that serves the link set as `name` on 127.0.0.1:`port`, one worker."""
    if name == "duanlian":
        return [binary, "serve", "--snapshot", snap, "--listen", f"127.0.0.1:{port}",
                "--admin-listen", f"127.0.0.1:{free_port()}", "--threads", "1"]
    if name == "nginx":
        d, conf = nginx_conf(work, port, os.path.join(data, "nginx-map.conf"), defer)
        return [tool("nginx"), "-p", d, "-e", os.path.join(d, "error.log"), "-c", conf,
                "-g", "daemon off; master_process off;"]
    if name == "haproxy":
        _, conf = haproxy_conf(work, port, os.path.join(data, "haproxy.map"), defer)
        return [tool("haproxy"), "-db", "-f", conf]
    raise ValueError(name)


def start(name, work, data, binary, snap, wrap=("taskset", "-c", "0"), defer=False):
    port = free_port()
    cmd = server_cmd(name, port, work, data, binary, snap, defer)
    return Server(name, port, cmd, os.path.join(work, f"{name}-{port}.log"), wrap)


# ---------------------------------------------------------------------------------------------
# talking to them

def exchange(port, host, path, timeout=5):
    """One request on a fresh connection with `Connection: close`; reads to EOF.
    Returns (status, Location or None)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    head = buf.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = head.split("\r\n")
    if not lines[0].startswith("HTTP/"):
        raise OSError(f"no HTTP answer: {buf[:80]!r}")
    status = int(lines[0].split(" ", 2)[1])
    location = None
    for line in lines[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "location":
            location = v.strip()
    return status, location


def check_same(servers, cases):
    """Every server gives every case the same (status, Location) as the first server; exits
    with status 1 listing the first differences otherwise. Returns {(status, has location): n}."""
    bad, kinds = [], {}
    for host, path in cases:
        answers = {s.name: exchange(s.port, host, path) for s in servers}
        first = answers[servers[0].name]
        kinds[(first[0], first[1] is not None)] = kinds.get((first[0], first[1] is not None), 0) + 1
        if any(a != first for a in answers.values()):
            bad.append(f"  Host: {host} GET {path}: " + ", ".join(f"{k} {v}" for k, v in answers.items()))
    if bad:
        sys.exit(f"MISMATCH in {len(bad)} of {len(cases)} requests:\n" + "\n".join(bad[:20]))
    return kinds


WRK_SCRIPT = """-- written by benches/compare.py: replays COMPARE_REQUESTS (`host<TAB>/path` lines) in order;
-- COMPARE_CLOSE=1 adds `Connection: close` to every request.
local close = os.getenv("COMPARE_CLOSE") == "1"
local reqs = {}
for line in io.lines(os.getenv("COMPARE_REQUESTS")) do
  local host, path = line:match("^([^\\t]+)\\t(.+)$")
  if host then
    local headers = { Host = host }
    if close then headers["Connection"] = "close" end
    reqs[#reqs + 1] = wrk.format("GET", path, headers)
  end
end
local i = 0
request = function()
  i = i % #reqs + 1
  return reqs[i]
end
"""


def cpu_times(pid):
    """(user, system) CPU seconds of the whole process, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK, int(fields[12]) / CLK


def busy_seconds():
    """CPU seconds all CPUs spent busy so far (user, nice, system, irq, softirq; not steal)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / CLK


def children_seconds():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def rss_mb(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2 ** 20


def wrk(server, work, reqfile, duration, conns, close):
    """One wrk run (core 1, one thread) against `server`; its figures, with the server's CPU
    time over the run divided by the requests wrk completed, and `other`: the CPU time neither the
    server nor wrk used (other processes, interrupts on an idle core) in cores' worth."""
    script = os.path.join(work, "replay.lua")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT)
    env = dict(os.environ, COMPARE_REQUESTS=reqfile, COMPARE_CLOSE="1" if close else "0")
    u0, s0 = cpu_times(server.pid)
    b0, c0, t0 = busy_seconds(), children_seconds(), time.monotonic()
    out = subprocess.run(["taskset", "-c", "1", tool("wrk"), "-t1", f"-c{conns}", f"-d{duration}s", "--latency",
                          "-s", script, f"http://127.0.0.1:{server.port}/"],
                         env=env, capture_output=True, text=True, check=True).stdout
    u1, s1 = cpu_times(server.pid)
    b1, c1, t1 = busy_seconds(), children_seconds(), time.monotonic()
    other = ((b1 - b0) - (c1 - c0) - (u1 - u0) - (s1 - s0)) / (t1 - t0)
    n = int(re.search(r"(\d+) requests in", out).group(1))

    def latency(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\b", out, re.M)
        return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockerr = re.search(r"Socket errors: (.*)", out)
    n1 = max(n, 1)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "user_us": (u1 - u0) * 1e6 / n1, "sys_us": (s1 - s0) * 1e6 / n1,
            "cpu_us": ((u1 - u0) + (s1 - s0)) * 1e6 / n1,
            "p50_us": latency(50), "p99_us": latency(99),
            "other": other, "bad": int(bad.group(1)) if bad else 0, "sockerr": sockerr.group(1).strip() if sockerr else ""}


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--links", type=int, default=1_000_000, help="links in the set (default 1000000)")
    ap.add_argument("--duration", type=int, default=8, help="seconds per wrk run (default 8)")
    ap.add_argument("--rounds", type=int, default=3, help="wrk runs per server (default 3)")
    ap.add_argument("--mode", choices=("keepalive", "close"), default="keepalive",
                    help="keepalive (default): many redirects per connection; close: one per connection")
    ap.add_argument("--peers", default="nginx", help="nginx (default) or nginx,haproxy")
    ap.add_argument("--conns", type=int, default=64, help="wrk connections (default 64)")
    ap.add_argument("--bin", default="target/release/duanlian", help="duanlian binary (default target/release/duanlian)")
    ap.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "duanlian-compare"),
                    help="where the link set, snapshot, configurations and logs go")
    ap.add_argument("--seed", type=int, default=42, help="link set seed (default 42)")
    ap.add_argument("--peer-defer-accept", action="store_true",
                    help="nginx `listen ... deferred`, HAProxy `bind ... defer-accept` (TCP_DEFER_ACCEPT, as "
                         "duanlian's redirect listener has); default off, as in ../shared/bench")
    a = ap.parse_args()
    peers = [p for p in a.peers.split(",") if p]
    if not peers or peers[0] != "nginx" or not set(peers) <= {"nginx", "haproxy"} or len(set(peers)) != len(peers):
        sys.exit("--peers: nginx, or nginx,haproxy")
    require(["wrk", "taskset"] + peers)
    if not os.access(a.bin, os.X_OK):
        sys.exit(f"--bin {a.bin}: not an executable; run `cargo build --release` first")
    os.makedirs(a.work, exist_ok=True)
    warning = load_warning()
    if warning:
        sys.stderr.write(warning + "\n")

    data = link_set(a.work, a.links, a.seed)
    reqfile = os.path.join(data, "requests.txt")
    sample = requests(data)
    snap, build_s = snapshot(a.bin, data, a.work, a.links, a.seed)

    names = peers + ["duanlian"]
    servers = []
    try:
        for name in names:
            s = start(name, a.work, data, a.bin, snap, defer=a.peer_defer_accept)
            servers.append(s)
            s.wait_ready(*sample[0])
        check_same(servers, probes(sample))
        res = {s.name: [] for s in servers}
        for r in range(a.rounds):
            for s in servers[r % len(servers):] + servers[:r % len(servers)]:
                res[s.name].append(wrk(s, a.work, reqfile, a.duration, a.conns, a.mode == "close"))
        rss = {s.name: rss_mb(s.pid) for s in servers}
        alive = [s.name for s in servers if s.proc.poll() is not None]
        if alive:
            sys.exit(f"exited during the run: {', '.join(alive)}")
    finally:
        for s in servers:
            s.stop()

    keys = ("rps", "user_us", "sys_us", "cpu_us", "p50_us", "p99_us")
    med = {k: {m: statistics.median(r[m] for r in v) for m in keys} for k, v in res.items()}
    ready = {s.name: s.ready_s for s in servers}
    print(f"links={a.links} mode={a.mode} conns={a.conns} rounds={a.rounds}x{a.duration}s "
          f"{'peers with TCP_DEFER_ACCEPT ' if a.peer_defer_accept else ''}"
          f"snapshot build {build_s:.2f}s; bin {describe_bin(a.bin)}")
    if warning:
        print(warning)
    print(f"{'':10}{'req/s':>9}{'user us':>9}{'sys us':>8}{'cpu us':>8}{'p50 us':>8}{'p99 us':>8}"
          f"{'ready s':>9}{'RSS MB':>8}   (medians; CPU per redirect)")
    for k in names:
        m = med[k]
        print(f"{k:10}{m['rps']:>9.0f}{m['user_us']:>9.2f}{m['sys_us']:>8.2f}{m['cpu_us']:>8.2f}"
              f"{m['p50_us']:>8.0f}{m['p99_us']:>8.0f}{ready[k]:>9.3f}{rss[k]:>8.0f}")
    other = max(r["other"] for v in res.values() for r in v)
    print(f"other CPU during the wrk runs (neither server nor wrk), % of a core: "
          + " | ".join(f"{k} " + " ".join(f"{r['other']:.0%}" for r in res[k]) for k in names)
          + ("  <- BUSY MACHINE: figures unreliable" if other > 0.1 else ""))
    print("cpu us per round: " + " | ".join(f"{k} " + " ".join(f"{r['cpu_us']:.2f}" for r in res[k]) for k in names))
    for k in names:
        bad = sum(r["bad"] for r in res[k])
        errs = [r["sockerr"] for r in res[k] if r["sockerr"]]
        if bad or errs:
            print(f"{k}: {bad} answers not 2xx/3xx; socket errors: {'; '.join(errs) or 'none'}")
    d = med["duanlian"]
    bad_d = sum(r["bad"] for r in res["duanlian"])
    for peer in reversed(peers):
        p = med[peer]
        print(f"{'' if peer == 'nginx' else 'vs_' + peer + ': '}"
              f"cpu_per_req_ratio={d['cpu_us'] / p['cpu_us']:.3f} "
              f"user_cpu_ratio={d['user_us'] / max(p['user_us'], 1e-9):.3f} "
              f"sys_cpu_ratio={d['sys_us'] / max(p['sys_us'], 1e-9):.3f} "
              f"rps_ratio={d['rps'] / p['rps']:.3f} p99_ratio={d['p99_us'] / p['p99_us']:.3f} "
              f"ready_ratio={ready['duanlian'] / ready[peer]:.4f} rss_ratio={rss['duanlian'] / max(rss[peer], 1e-9):.3f} "
              f"bad={bad_d}")


if __name__ == "__main__":
    main()
