#!/usr/bin/env python3
"""The shared nginx side-by-side harness at 10M links, with a longer wait for nginx to start.

nginx parses a 10M-entry `map` at start-up for longer than the harness's 600 s limit on this
machine; everything else (same answers check, wrk rounds, CPU accounting) is the harness's own.
Usage, from the repository root after `cargo build --release`:
    READY_LIMIT=7200 python3 benches/nginx-10m.py [harness flags]
"""
import os
import sys

from harness_util import harness as load_harness

harness = load_harness()

limit = int(os.environ.get("READY_LIMIT", "7200"))
wait_ready = harness.wait_ready
harness.wait_ready = lambda port, host, path, proc, limit_=None: wait_ready(port, host, path, proc, limit)
sys.argv = [sys.argv[0], "--links", "10000000"] + sys.argv[1:]
harness.main()
