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
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import sys, json, time
from pathlib import Path
from usmis.synth import generate
s = generate(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
print(json.dumps({"records": sum(s.records.values()), "malformed": s.malformed,
                  "fraud": sum(s.fraud_instances.values()), "seconds": s.seconds}))
"""


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


def run(n: int, seed: int, base: Path, keep: bool) -> dict[str, float]:
    out = base / f"nation-{n}"
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(out), str(n), str(seed)],
                            stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    assert proc.stdout is not None
    line = proc.stdout.read().strip()
    if status != 0:
        raise SystemExit(f"generation of {n} people failed (status {status})")
    import json

    info = json.loads(line)
    size = _du(out)
    if not keep:
        shutil.rmtree(out)
    return {"people": n, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": usage.ru_maxrss / 1024, "records": info["records"],
            "malformed": info["malformed"], "fraud": info["fraud"], "disk_mb": size / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="folder for the nations")
    ap.add_argument("--keep", action="store_true", help="keep the generated nations")
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
        r = run(n, args.seed, base, args.keep)
        rows.append(r)
        print(f"{n:>9} {r['wall_s']:>8.1f} {r['cpu_s']:>8.1f} {r['peak_rss_mb']:>12.0f} "
              f"{r['records']:>11} {r['records'] / r['cpu_s']:>12.0f} {r['disk_mb']:>9.0f}",
              flush=True)
    for r in rows:
        if r["people"] == 100_000:
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
