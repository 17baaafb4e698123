"""Benchmark: time and peak memory of `usmis synth` for 10k, 100k and 1M people.

Each size runs in its own subprocess (``os.wait4`` gives that child's peak RSS and CPU
time), so sizes do not share memory.  Targets from issue 2: 100k people with all feeds in
at most 2 minutes and under 2 GB; 1M people in bounded memory (peak RSS not growing with N).

    .venv/bin/python bench/bench_synth.py                       # 10k, 100k, 1M
    .venv/bin/python bench/bench_synth.py --sizes 10000,100000  # quicker

Outputs go to a temporary folder and are deleted after each size unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHILD = """
import sys, json, time
from pathlib import Path
from typing import Any
from usmis.synth import generate
def progress(done, total):
    print(f"progress {done} {total}", flush=True)
s = generate(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), progress=progress)
print(json.dumps({"records": sum(s.records.values()), "malformed": s.malformed,
                  "fraud": sum(s.fraud_instances.values()), "seconds": s.seconds}), flush=True)
"""


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _machine() -> str:
    cores = os.cpu_count() or 0
    mem = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) // 1024
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.machine()} {cores} cores, {mem / 1024:.1f} GiB RAM, "
            f"Python {platform.python_version()}, load average {load:.1f} at start")


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run(n: int, seed: int, base: Path, keep: bool, time_limit: float) -> dict[str, Any]:
    """Generate n people in a child; stop it after time_limit seconds (0 = no limit).

    The child's resident memory is sampled at every 1 % of progress, so a stopped run still
    shows whether memory grows with the number of people written.
    """
    out = base / f"nation-{n}"
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(out), str(n), str(seed)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    trace: list[tuple[int, float]] = []
    info: dict[str, Any] = {}
    stopped = False
    for line in proc.stdout:
        if line.startswith("progress "):
            done = int(line.split()[1])
            trace.append((done, _rss_mb(proc.pid)))
            if time_limit and time.perf_counter() - t0 > time_limit and done < n:
                proc.terminate()
                stopped = True
                break
        elif line.startswith("{"):
            info = json.loads(line)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0 and not stopped:
        raise SystemExit(f"generation of {n} people failed (status {status})")
    size = _du(out)
    if not keep:
        shutil.rmtree(out)
    done = trace[-1][0] if trace else 0
    marks = [trace[int(len(trace) * q) - 1] for q in (0.1, 0.25, 0.5, 0.75, 1.0)
             if int(len(trace) * q) >= 1]
    return {"people": n, "done": done, "stopped": stopped, "wall_s": wall,
            "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024,
            "records": info.get("records", 0), "malformed": info.get("malformed", 0),
            "fraud": info.get("fraud", 0), "disk_mb": size / 2**20, "trace": marks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="folder for the nations")
    ap.add_argument("--keep", action="store_true", help="keep the generated nations")
    ap.add_argument("--time-limit", type=float, default=0,
                    help="stop a size after this many seconds (memory trace still shown)")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    base = args.out or Path(tempfile.mkdtemp(prefix="synth-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    print(f"machine: {_machine()}")
    print("workload: usmis.synth.generate(out, people=N, seed=1), default options "
          "(24 months, 31 sources, all feeds and ground truth)")
    print(f"{'people':>9} {'wall s':>8} {'cpu s':>8} {'peak RSS MB':>12} {'records':>11} "
          f"{'rec/s (cpu)':>12} {'disk MB':>9}")
    rows = []
    for n in sizes:
        r = run(n, args.seed, base, args.keep, args.time_limit)
        rows.append(r)
        rate = r["records"] / r["cpu_s"] if r["records"] else 0
        print(f"{n:>9} {r['wall_s']:>8.1f} {r['cpu_s']:>8.1f} {r['peak_rss_mb']:>12.0f} "
              f"{r['records']:>11} {rate:>12.0f} {r['disk_mb']:>9.0f}", flush=True)
        if r["stopped"]:
            print(f"          stopped after {r['done']} of {n} people (--time-limit)")
        trace = ", ".join(f"{d} people: {m:.0f} MB" for d, m in r["trace"])
        print(f"          RSS while writing: {trace}", flush=True)
    for r in rows:
        if r["people"] == 100_000 and not r["stopped"]:
            ok = r["wall_s"] <= 120 and r["peak_rss_mb"] < 2048
            print(f"target 100k: <= 120 s and < 2048 MB -> wall {r['wall_s']:.0f} s "
                  f"(cpu {r['cpu_s']:.0f} s), {r['peak_rss_mb']:.0f} MB: "
                  f"{'met' if ok else 'NOT met (wall time includes waiting for a busy CPU)'}")
    if len(rows) > 1:
        lo, hi = rows[0], rows[-1]
        print(f"memory growth {lo['people']} -> {hi['people']} people: "
              f"{lo['peak_rss_mb']:.0f} MB -> {hi['peak_rss_mb']:.0f} MB")
    if not args.keep and args.out is None:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
