#!/usr/bin/env python3
"""make test's runner: every test binary `cargo test` would run, two at a time.

`cargo test` runs its test binaries one after the other, and they spend most of their time
waiting (on moto, on the simulated ECS, on the function's own timeouts and polls), not
computing; each binary has its own moto. Two at a time, the fault matrix (tests/reliability.rs,
nearly half of their time alone) runs beside the rest instead of after them.

    scripts/run_tests.py [--first NAME ...] [-- CARGO_ARGS ...]

Builds with `cargo test --no-run CARGO_ARGS`, then runs each binary from the package's directory,
as cargo does, the ones named by --first (a test target's name) first. Each binary's output is
printed whole when it ends, under cargo's own "Running" line, so that a log reads as cargo's
does. Every binary runs even when one fails; then the doc-tests run, and the exit status is 1
if anything failed. LANES in the environment changes how many run at once (1: as cargo does).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_binaries(cargo_args):
    """The test executables `cargo test` would run, as (target name, source path, executable)."""
    out = subprocess.run(
        ["cargo", "test", "--no-run", "--message-format=json-render-diagnostics", *cargo_args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        check=True,
    ).stdout
    found = []
    for line in out.decode().splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["profile"]["test"] and msg.get("executable"):
            target = msg["target"]
            src = os.path.relpath(target["src_path"], ROOT)
            found.append((target["name"], src, msg["executable"]))
    return found


def run(binary, lock, failed):
    name, src, exe = binary
    started = time.monotonic()
    env = dict(os.environ, CARGO_MANIFEST_DIR=ROOT)
    # Into a file, not a pipe: the moto a test binary starts outlives it by a moment, holding
    # the binary's stdout, and a pipe would not end until it did; a file is read once the
    # binary has exited.
    with tempfile.TemporaryFile() as out:
        code = subprocess.run([exe], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
        took = time.monotonic() - started
        out.seek(0)
        with lock:
            kind = "unittests " if src.startswith("src/") else ""
            print(f"     Running {kind}{src} ({exe})", flush=True)
            sys.stdout.buffer.write(out.read())
            print(f"     ({name}: {took:.1f} s, exit status {code})\n", flush=True)
            if code != 0:
                failed.append(src)


def main():
    args = sys.argv[1:]
    cargo_args = []
    if "--" in args:
        i = args.index("--")
        args, cargo_args = args[:i], args[i + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", nargs="*", default=[], help="test targets to start first")
    opts = parser.parse_args(args)
    lanes = int(os.environ.get("LANES", "2"))

    binaries = test_binaries(cargo_args)
    names = [b[0] for b in binaries]
    unknown = [n for n in opts.first if n not in names]
    if unknown:
        sys.exit(f"run_tests.py: --first names no test target: {unknown} (targets: {names})")
    binaries.sort(key=lambda b: opts.first.index(b[0]) if b[0] in opts.first else len(opts.first))

    lock = threading.Lock()
    failed = []
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=lanes) as pool:
        runs = [pool.submit(run, b, lock, failed) for b in binaries]
    for b, r in zip(binaries, runs):
        if r.exception() is not None:
            print(f"{b[1]} did not run: {r.exception()}", file=sys.stderr)
            failed.append(b[1])
    print(f"{len(binaries)} test binaries, {lanes} at a time: {time.monotonic() - started:.0f} s", flush=True)

    doc = subprocess.run(["cargo", "test", "--doc", *cargo_args], cwd=ROOT)
    if doc.returncode != 0:
        failed.append("doc-tests")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
