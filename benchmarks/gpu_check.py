"""The whole GPU check in one command: a subset of the full profile, and the monitor overhead.

Run on a machine with one H100/H200 (``bash benchmarks/gpu_check.sh OUT``); it is sized
to finish within 10 minutes there, so that it fits a 15-minute device lease with its
set-up.  It

1. lists the full profile's planned runs (:func:`normdyn.figures.runner.plan_figures`),
   on synthetic 32x32x3 images where no local CIFAR-10 is present (``$NORMDYN_DATA``);
2. trains, per figure, its first planned run (seed 0) while the cost model's estimate
   of the total stays under ``--budget`` seconds, into ``OUT/full/cache`` (the run cache
   that ``normdyn figures --profile full --out OUT/full`` resumes from), timing each;
3. runs ``benchmarks/monitor_overhead.py --device cuda`` (ResNet-56, batch 128; goal
   <= 1%);
4. writes ``OUT/gpu_check.json`` and ``OUT/gpu_runs.csv`` (columns: figure, key, arch,
   depth, steps, status, seconds, estimated_seconds, seconds_per_step).

Without CUDA it says so, runs one micro-profile run on the CPU to show the path works,
and exits 0: CI never has a GPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output directory")
    parser.add_argument("--budget", type=float, default=330.0,
                        help="estimated GPU seconds of training runs (default: 330)")
    args = parser.parse_args(argv)
    import pandas as pd
    import torch

    from normdyn.figures import runner as FR
    from normdyn.figures.launch import collect_plan, estimate_seconds, launch

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    profile = "full" if cuda else "micro"
    summary: dict = {"cuda": cuda, "torch": torch.__version__, "profile": profile,
                     "device_name": torch.cuda.get_device_name(0) if cuda else "cpu"}
    if not cuda:
        print("no CUDA device: running one micro-profile run on the CPU instead "
              "(the GPU numbers are not measured)", file=sys.stderr)
    runs = collect_plan(FR.select(None), profile, FR._import_script)
    summary["planned_runs"] = len(runs)
    summary["planned_gpu_seconds_estimate"] = sum(estimate_seconds(r.config) for r in runs)
    chosen, spent, seen = [], 0.0, set()
    for run in runs:
        fig = run.figures[0]
        cost = estimate_seconds(run.config, "gpu" if cuda else "cpu")
        if fig in seen or (chosen and spent + cost > args.budget) or (not cuda and chosen):
            continue
        seen.add(fig)
        chosen.append(run)
        spent += cost
    rows = []
    cache = out / "full" / "cache" if cuda else out / "micro" / "cache"
    for run in chosen:
        start = time.perf_counter()
        status = launch([run], cache, ROOT, launcher="local", jobs=1, progress=False)
        seconds = time.perf_counter() - start
        c = run.config
        rows.append({"figure": ",".join(run.figures), "key": run.key, "arch": c.get("arch"),
                     "depth": c.get("depth"), "steps": c.get("steps"),
                     "status": status.get(run.key, "cached"), "seconds": round(seconds, 2),
                     "estimated_seconds": round(estimate_seconds(c, "gpu" if cuda else "cpu"),
                                                2),
                     "seconds_per_step": round(seconds / max(1, c.get("steps", 1)), 5)})
        print(json.dumps(rows[-1]), flush=True)
    pd.DataFrame(rows).to_csv(out / "gpu_runs.csv", index=False)
    overhead = out / "monitor_overhead.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "monitor_overhead.py"), "--json",
           str(overhead)] + (["--device", "cuda"] if cuda else ["--threads", "1",
                                                               "--blocks", "2"])
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    print(proc.stdout[-3000:], proc.stderr[-2000:], sep="\n")
    summary["monitor_overhead"] = (json.loads(overhead.read_text())
                                   if overhead.is_file() else {"error": proc.stderr[-500:]})
    summary["runs"] = rows
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"wrote {out / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
