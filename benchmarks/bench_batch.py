"""Measure `agentloop batch` throughput: generated tasks, the scripted server with a fixed reply delay
standing in for the model, several worker counts, the local backend (and Ray when asked).

Each task is a tiny repository whose check fails until the scripted reply fixes it: at the first turn,
or with `--turns N` at the N-th (the replies before it are real edits that leave the bug), so the
per-step cost of a longer episode shows apart from the once-per-rollout set-up and end.
Prints per backend and worker count: rollouts per hour and environment steps (turns) per second over
the batch's whole wall time (start-up included), rollouts per hour in the steady state (workers /
mean rollout latency, Little's law: what a long batch approaches once the one-time start-up, the
warm worker's imports, is amortised), p50/p95 rollout latency, workspace set-up time
(making the rollout's repository), framework overhead per step (a rollout's time minus the model's delay and the
checks' time, per turn: set-up, forking, litellm's client, applying the edit, git, the record) and its
share of the rollout's time, and scaling efficiency against ideal (workers x the 1-worker rate),
from the steady-state rates. Ray is measured after a start-up pass of the same batch (the pass's
wall time is printed; each batch starts its own actors, whose warm-up counts in its wall time), and
also shows what Ray adds per rollout, median and p95 (the driver's round trip minus the time inside
the actor call). The
load average is printed first: on a shared machine the figures move with it.

Run:  .venv/bin/python benchmarks/bench_batch.py [--tasks 32] [--delay 1.0] [--workers 1,2,4,8] [--turns 1] [--ray]
          [--sandbox off|bwrap]
"""

from __future__ import annotations

import argparse
import json
import os
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
CHECK = f"{sys.executable} -c \"import calc, sys; sys.exit(calc.add(2, 3) != 5)\""


class TurnsLLM(FakeLLM):
    """The scripted server, replying by the turn a request is for: an edit that keeps the bug (a new
    comment) before turn `turns`, the fix at it. Requests are not kept (a long batch would pile them up)."""

    def __init__(self, turns: int, delay: float):
        super().__init__([])
        self.turns, self.delay = turns, delay

    def next_step(self, body: dict) -> dict:
        turn = sum(m.get("role") == "assistant" for m in body.get("messages", []))
        current = "    return a - b" + (f"  # try {turn}" if turn else "")
        new = f"    return a - b  # try {turn + 1}" if turn + 1 < self.turns else "    return a + b"
        return {"content": f"calc.py\n<<<<<<< SEARCH\n{current}\n=======\n{new}\n>>>>>>> REPLACE\n",
                "delay": self.delay}


def make_buggy_repo(repo: Path) -> Path:
    """A git repository whose one commit holds calc.py with the bug the scripted model fixes."""
    repo.mkdir(parents=True)
    (repo / "calc.py").write_text(BUGGY)
    for args in (["init", "-q"], ["add", "-A"],
                 ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "start"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    return repo


def runner_jobs(tmp: Path, count: int, turns: int, check: str, api_base: str, sandbox: str) -> list[dict]:
    """`count` jobs (as agentloop.batch.worker runs them) of one task over one buggy repository, for
    the scripts that run rollouts in a runner of their own (bench_rollout_cpu, profile_rollout)."""
    from agentloop.batch.tasks import validate_row
    from agentloop.batch.worker import job_for

    repo = make_buggy_repo(tmp / "repo")
    jobs = []
    for i in range(count):
        row, problems = validate_row({"id": f"t{i}", "task": "add must add", "source": {"path": str(repo)},
                                      "checks": [check], "limits": {"max_turns": turns + 1}}, "row", tmp)
        assert row is not None, problems
        settings = {"model": "openai/fake", "api_base": api_base, "sandbox": sandbox}
        jobs.append(job_for(row, 0, tmp / "out", settings, row.id, tmp / f"r{i}.json"))
    return jobs


def make_tasks(folder: Path, n: int, turns: int = 1) -> Path:
    rows = []
    for i in range(n):
        repo = make_buggy_repo(folder / f"repo{i}")
        rows.append({"id": f"t{i}", "task": "add must add", "source": {"path": str(repo)}, "checks": [CHECK],
                     "limits": {"max_turns": turns + 1}})
    path = folder / "tasks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def times_in(run_dir: str | None) -> tuple[int, float, float]:
    """Model calls, the model client's time (litellm's latency) and the checks' time of one run."""
    calls, client, checks = 0, 0.0, 0.0
    if run_dir:
        for line in Path(run_dir, "trajectory.jsonl").read_text().splitlines():
            event = json.loads(line)
            if event["type"] == "model_call":
                calls += 1
                client += float(event["reply"].get("latency_s") or 0.0)
            elif event["type"] == "check":
                checks += float(event.get("duration_s") or 0.0)
    return calls, client, checks


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * len(values)) - 1))]


def measure(tasks: Path, out: Path, workers: int, backend: str, api_base: str, delay: float,
            ray_cpus: float = 1.0, sandbox: str = "off") -> dict:
    settings = Settings(model="openai/fake", api_base=api_base, sandbox=sandbox, workers=workers)
    started = time.monotonic()
    run_batch(tasks, out, settings, backend=backend, say=lambda line: None, ray_cpus=ray_cpus)
    wall = time.monotonic() - started
    results = read_results(out / "results.jsonl")
    seconds = [r["seconds"] for r in results]
    steps = sum(r["turns"] for r in results)
    framework, client = [], []
    for r in results:
        calls, client_s, checks = times_in(r["run_dir"])
        framework.append(r["seconds"] - delay * calls - checks)
        client.append(client_s - delay * calls)
    overhead = [r["ray_overhead_s"] for r in results if "ray_overhead_s" in r]
    return {"n": len(results), "passed": sum(r["status"] == "passed" for r in results), "wall": wall,
            "per_hour": len(results) / wall * 3600, "steps_per_s": steps / wall,
            "steady_per_hour": workers / statistics.mean(seconds) * 3600,
            "p50": statistics.median(seconds), "p95": percentile(seconds, 0.95),
            "workspace": statistics.mean(r.get("workspace_seconds", 0.0) for r in results),
            "framework_step": sum(framework) / max(1, steps), "share": sum(framework) / sum(seconds),
            "client_step": sum(client) / max(1, steps),
            "ray_overhead_ms": 1000 * statistics.median(overhead) if overhead else None,
            "ray_overhead_p95_ms": 1000 * percentile(overhead, 0.95) if overhead else None}


def server_start_s() -> float:
    """Seconds until a warm fork server has imported everything (paid once per batch, per Ray worker)."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "agentloop.batch.worker", "--serve"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    proc.stdout.readline()
    elapsed = time.monotonic() - started
    proc.stdin.close()
    proc.wait()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--delay", type=float, default=1.0)
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--turns", type=int, default=1, help="the turn at which the scripted reply fixes the bug")
    parser.add_argument("--ray", action="store_true", help="also the Ray backend (needs agentloop[ray])")
    parser.add_argument("--sandbox", choices=["off", "bwrap"], default="off",
                        help="the checks' sandbox (off by default, as in the figures in docs/batch.md)")
    args = parser.parse_args()
    backends = ["local"] + (["ray"] if args.ray else [])
    cores = os.cpu_count() or 1
    workers_list = [int(w) for w in args.workers.split(",")]
    print(f"{args.tasks} rollouts of {args.turns} turn(s), model delay {args.delay}s, sandbox {args.sandbox}, "
          f"{cores} cores, load average {os.getloadavg()[0]:.1f}; fork server start-up {server_start_s():.1f}s")
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp, \
            TurnsLLM(args.turns, args.delay) as server:
        tasks = make_tasks(Path(tmp), args.tasks, args.turns)
        print(f"{'backend':8} {'workers':>7} {'passed':>7} {'wall s':>7} {'rollouts/h':>10} {'steady/h':>8} "
              f"{'steps/s':>7} "
              f"{'p50 s':>6} {'p95 s':>6} {'setup ms':>8} {'fw ms/step':>10} {'fw share':>8} {'litellm ms':>10} "
              f"{'scaling':>7} {'ray ms p50/p95':>14}")
        for backend in backends:
            if backend == "ray":
                import ray

                started = time.monotonic()
                ray.init(num_cpus=max(cores, *workers_list), include_dashboard=False, log_to_driver=False,
                         runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}})
                print(f"ray start-up {time.monotonic() - started:.1f}s")
            base_rate = None
            for workers in workers_list:
                if backend == "ray":  # Ray's start-up: its worker processes and their warm workers
                    warm = measure(tasks, Path(tmp) / f"warm-{workers}", workers, backend, server.api_base,
                                   args.delay, sandbox=args.sandbox)
                    print(f"ray start-up pass, {workers} workers: {warm['wall']:.1f}s", flush=True)
                m = measure(tasks, Path(tmp) / f"out-{backend}-{workers}", workers, backend, server.api_base,
                            args.delay, sandbox=args.sandbox)
                base_rate = base_rate or m["steady_per_hour"]
                scaling = m["steady_per_hour"] / (base_rate * workers)
                ray_ms = (f"{m['ray_overhead_ms']:.1f}/{m['ray_overhead_p95_ms']:.0f}"
                          if m["ray_overhead_ms"] is not None else "")
                print(f"{backend:8} {workers:>7} {m['passed']:>3}/{m['n']:<3} {m['wall']:>7.1f} {m['per_hour']:>10.0f} "
                      f"{m['steady_per_hour']:>8.0f} "
                      f"{m['steps_per_s']:>7.2f} {m['p50']:>6.2f} {m['p95']:>6.2f} {1000 * m['workspace']:>8.0f} "
                      f"{1000 * m['framework_step']:>10.0f} {m['share']:>8.1%} {1000 * m['client_step']:>10.0f} "
                      f"{scaling:>7.0%} {ray_ms:>14}", flush=True)
            if backend == "ray":
                ray.shutdown()


if __name__ == "__main__":
    main()
