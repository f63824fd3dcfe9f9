"""Measure `agentloop batch` throughput: generated tasks, the scripted server with a fixed reply delay
standing in for the model, several worker counts, the local backend (and Ray when installed).

Each task is a tiny repository whose check fails until the one scripted reply fixes it (one turn).
Prints rollouts per hour, environment steps per second, p50/p95 rollout latency, framework time per
rollout (wall time of a rollout minus the model's delay: workspace set-up, process start, applying
the edit, the checks, the record), and scaling efficiency against ideal (workers x the 1-worker rate).

Run:  .venv/bin/python benchmarks/bench_batch.py [--tasks 16] [--delay 1.0] [--workers 1,2,4,8] [--ray]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fake_llm import FakeLLM  # noqa: E402

from agentloop.batch.driver import Settings, read_results, run_batch  # noqa: E402

BUGGY = "def add(a, b):\n    return a - b\n"
FIX = "calc.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\n"
CHECK = f"{sys.executable} -c \"import calc, sys; sys.exit(calc.add(2, 3) != 5)\""


def make_tasks(folder: Path, n: int) -> Path:
    rows = []
    for i in range(n):
        repo = folder / f"repo{i}"
        repo.mkdir(parents=True)
        (repo / "calc.py").write_text(BUGGY)
        for args in (["init", "-q"], ["add", "-A"],
                     ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "start"]):
            subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
        rows.append({"id": f"t{i}", "task": "add must add", "source": {"path": str(repo)}, "checks": [CHECK],
                     "limits": {"max_turns": 2}})
    path = folder / "tasks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def measure(tasks: Path, out: Path, workers: int, backend: str, api_base: str, delay: float) -> dict:
    settings = Settings(model="openai/fake", api_base=api_base, sandbox="off", workers=workers)
    started = time.monotonic()
    run_batch(tasks, out, settings, backend=backend, say=lambda line: None)
    wall = time.monotonic() - started
    results = read_results(out / "results.jsonl")
    seconds = sorted(r["seconds"] for r in results)
    steps = sum(r["turns"] for r in results)
    framework = [r["seconds"] - delay * r["turns"] for r in results]
    return {"n": len(results), "passed": sum(r["status"] == "passed" for r in results), "wall": wall,
            "per_hour": len(results) / wall * 3600, "steps_per_s": steps / wall,
            "p50": statistics.median(seconds), "p95": seconds[max(0, int(len(seconds) * 0.95) - 1)],
            "framework": statistics.mean(framework)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--delay", type=float, default=1.0)
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--ray", action="store_true", help="also the Ray backend (needs agentloop[ray])")
    args = parser.parse_args()
    backends = ["local"] + (["ray"] if args.ray else [])
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp, \
            FakeLLM([{"content": FIX, "delay": args.delay}]) as server:
        tasks = make_tasks(Path(tmp), args.tasks)
        print(f"{args.tasks} one-turn rollouts, model delay {args.delay}s, sandbox off")
        print(f"{'backend':8} {'workers':>7} {'passed':>7} {'wall s':>7} {'rollouts/h':>10} {'steps/s':>7} "
              f"{'p50 s':>6} {'p95 s':>6} {'framework s':>11} {'scaling':>7}")
        for backend in backends:
            base_rate = None
            for workers in [int(w) for w in args.workers.split(",")]:
                m = measure(tasks, Path(tmp) / f"out-{backend}-{workers}", workers, backend, server.api_base,
                            args.delay)
                base_rate = base_rate or m["per_hour"]
                scaling = m["per_hour"] / (base_rate * workers)
                print(f"{backend:8} {workers:>7} {m['passed']:>3}/{m['n']:<3} {m['wall']:>7.1f} {m['per_hour']:>10.0f} "
                      f"{m['steps_per_s']:>7.2f} {m['p50']:>6.2f} {m['p95']:>6.2f} {m['framework']:>11.2f} "
                      f"{scaling:>7.0%}")


if __name__ == "__main__":
    main()
