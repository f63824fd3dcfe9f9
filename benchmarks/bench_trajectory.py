"""How much recording costs, and how fast runs list.

  python benchmarks/bench_trajectory.py [--runs 3000] [--events 5000]

Prints: the cost per event of Trajectory.event (append + flush + redaction) for typical events, the
cost of the conversation delta on a growing 30-call conversation, and the wall time of
`agentloop runs` (a fresh process, as a user runs it) over a directory of fake runs.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentloop.record.redact import Redactor  # noqa: E402
from agentloop.record.trajectory import SUMMARY, TRAJECTORY, Trajectory, append_index  # noqa: E402

CHECK_OUTPUT = ("tests/test_calc.py:5: AssertionError: assert -1 == 5\n" * 40)[:2000]
REPLY = {"content": "calc.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\n",
         "tool_calls": [], "finish_reason": "stop", "prompt_tokens": 1200, "completion_tokens": 80,
         "cost_usd": 0.0012, "cost_note": None, "latency_s": 1.4, "attempts": [{"latency_s": 1.4}], "logprobs": None}


def per_event(events: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        traj = Trajectory(Path(tmp) / "run", Redactor(environ={"OPENAI_API_KEY": "sk-bench-000000000000000000"}))
        cases = {
            "check (2 KB output)": dict(turn=1, name="pytest", feedback=True, accept=True, passed=False,
                                        output_file="checks/0001.log", command="pytest -q", exit_code=1,
                                        output=CHECK_OUTPUT, duration_s=1.2, timed_out=False, total_bytes=2000,
                                        elided_bytes=0),
            "turn (small)": dict(turn=1, applied=True, checks_passed=0, checks_total=1,
                                 totals={"turns": 1, "model_calls": 1, "prompt_tokens": 1200}),
            "model_call (reply, 1-message delta)": dict(turn=1, model="openai/x", messages_base=4,
                                                        messages_new=[{"role": "user", "content": CHECK_OUTPUT}],
                                                        tools=["read_file"], reply=REPLY),
        }
        for label, data in cases.items():
            kind = label.split()[0]
            samples = []
            for _ in range(5):
                start = time.perf_counter()
                for _ in range(events // 5):
                    traj.event(kind, **data)
                samples.append((time.perf_counter() - start) / (events // 5))
            print(f"  {label:<40} {statistics.median(samples) * 1e6:8.1f} us/event")
        traj.close()
        size = (Path(tmp) / "run" / TRAJECTORY).stat().st_size
        print(f"  ({3 * events} events written, {size / 1e6:.1f} MB)")


def delta_cost() -> None:
    """30 model calls whose conversation grows by a 4 KB message each time (to ~120 KB)."""
    with tempfile.TemporaryDirectory() as tmp:
        traj = Trajectory(Path(tmp) / "run")
        messages = [{"role": "system", "content": "s" * 4000}, {"role": "user", "content": "u" * 8000}]
        total = 0.0
        for i in range(30):
            start = time.perf_counter()
            traj.event("model_call", turn=i, model="m", **traj.conversation_delta(messages), reply=REPLY)
            total += time.perf_counter() - start
            messages.append({"role": "assistant", "content": "a" * 2000})
            messages.append({"role": "user", "content": "f" * 2000})
        traj.close()
        size = (Path(tmp) / "run" / TRAJECTORY).stat().st_size
        full = sum(len(json.dumps(messages[: 2 + 2 * i])) for i in range(30))
        print(f"  30 calls: {total / 30 * 1e3:.2f} ms/call incl. delta; file {size / 1e3:.0f} KB "
              f"(whole conversations each call would be {full / 1e3:.0f} KB)")


def make_runs(folder: Path, count: int, index: bool) -> None:
    for i in range(count):
        run_id = f"20260101-{i // 3600:02d}{i // 60 % 60:02d}{i % 60:02d}-{i:06x}"
        run_dir = folder / run_id
        run_dir.mkdir(parents=True)
        header = {"type": "header", "seq": 1, "time": "2026-01-01T00:00:00.000+00:00", "task": f"task {i}"}
        (run_dir / TRAJECTORY).write_text(json.dumps(header) + "\n" + ("x" * 2000 + "\n") * 50)
        if i % 100 == 99:
            continue  # a crashed run: no summary, listed from its first line
        summary = {"run_id": run_id, "started": "2026-01-01T00:00:00.000+00:00",
                   "outcome": ("accepted", "budget_exhausted", "gave_up")[i % 3], "task": f"Fix bug {i}",
                   "model": "openai/x", "turns": i % 6, "cost_usd": 0.01 * (i % 7), "duration_s": 12.5,
                   "reward": 1.0 if i % 3 == 0 else -1.0, "checks": [{"command": "pytest", "exit_code": 0}]}
        (run_dir / SUMMARY).write_text(json.dumps(summary, indent=2))
        if index:
            append_index(folder, summary | {"run_dir": str(run_dir)})


def listing(count: int, index: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "runs"
        make_runs(folder, count, index)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
        for args in (["runs"], ["runs", "--outcome", "accepted"], ["runs", "--json"]):
            times = []
            for _ in range(3):
                start = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", "agentloop", *args, "--runs-dir", str(folder)],
                                      capture_output=True, text=True, env=env, cwd=tmp)
                times.append(time.perf_counter() - start)
                assert proc.returncode == 0, proc.stderr
            lines = proc.stdout.count("\n")
            print(f"  agentloop {' '.join(args):<28} {count} runs: {min(times):.3f} s best of 3 "
                  f"(median {statistics.median(times):.3f} s), {lines} lines")
        from agentloop.record.runlog import list_runs

        start = time.perf_counter()
        rows = list_runs(folder)
        print(f"  list_runs() in process: {time.perf_counter() - start:.3f} s for {len(rows)} rows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args()
    print("Per-event write cost (json + redaction + append + flush):")
    per_event(args.events)
    print("Conversation deltas:")
    delta_cost()
    print("Listing runs (finished runs in index.jsonl, as `agentloop fix` writes them; 1% crashed, not indexed):")
    listing(args.runs, index=True)
    print("Listing runs without an index (every summary.json read):")
    listing(args.runs, index=False)


if __name__ == "__main__":
    main()
