"""What the scripts around the shared nginx harness (../shared/bench/redirect-vs-nginx.py) have
in common: the harness itself as a module, and its link set, generated and built into a
snapshot on first use."""
import importlib.util
import os
import subprocess
import sys

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench",
                      "redirect-vs-nginx.py")


def harness():
    """The shared harness, loaded as a module (its helpers, and `main` to run it)."""
    spec = importlib.util.spec_from_file_location("harness", SHARED)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def floor_binary(binary):
    """The bench-floor example beside `binary` (target/release/duanlian), built if missing:
    the floor is a bench program, not a command of the binary."""
    path = os.path.join(os.path.dirname(binary), "examples", "bench-floor")
    if not os.path.exists(path):
        subprocess.run(["cargo", "build", "--release", "--example", "bench-floor"], check=True)
    return path


def link_set(h, binary, links, work):
    """`(requests file, snapshot)` for the harness's `links` synthetic links under `work`: the
    same files the harness uses, made with its generator and `binary` where missing."""
    data = os.path.join(work, f"links-{links}")
    if not os.path.exists(os.path.join(data, "requests.txt")):
        h.sh(f"{sys.executable} {os.path.dirname(SHARED)}/gen-links.py {links} {data}")
    snap = os.path.join(work, f"links-{links}.snap")
    if not os.path.exists(snap):
        h.sh(f"{binary} snapshot build --input {data}/links.csv --output {snap}", stdout=subprocess.DEVNULL)
    return os.path.join(data, "requests.txt"), snap
