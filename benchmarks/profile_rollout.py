"""Where a rollout's wall time goes: a runner (as agentloop.batch.worker's, one long-lived reaper for
its checks) runs N+1 one-turn rollouts of bench_batch.py's task against the scripted server with a
reply delay, and a timer samples the stack every millisecond; the tree of frames that took 2 ms or
more per rollout is printed (the runner's first rollout left out). The model wait and the checks
show as what they are; everything else is the framework's.

Run:  PYTHONPATH=$PWD .venv/bin/python benchmarks/profile_rollout.py [N=20] [DELAY=1.0] [SANDBOX=off|bwrap]
"""

from __future__ import annotations

import collections
import json
import os
import signal
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bench_batch import CHECK, TurnsLLM, runner_jobs  # noqa: E402

from agentloop.batch.worker import preload, run_job  # noqa: E402
from agentloop.workspace.reaper_client import use_one_reaper  # noqa: E402

SHOWN_MS = 2.0


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    delay = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    box = sys.argv[3] if len(sys.argv) > 3 else "off"
    preload()
    tmp = Path(tempfile.mkdtemp(prefix="profile-rollout-"))
    with TurnsLLM(1, delay) as server:
        jobs = runner_jobs(tmp, n + 1, 1, CHECK, server.api_base, box)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setsid()
                use_one_reaper()
                _profile(jobs, tmp, delay)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert status == 0, "the runner failed"
    report = json.loads((tmp / "profile.json").read_text())
    tree = collections.Counter({tuple(stack): count for stack, count in report["samples"]})
    print(f"{n} one-turn rollouts, model delay {delay}s, sandbox {box}: wall s median "
          f"{statistics.median(report['wall']):.3f}, framework ms median {statistics.median(report['fw']):.0f} "
          f"(wall - model delay - checks); ms per rollout, frames of {SHOWN_MS:.0f} ms or more:")
    totals: collections.Counter = collections.Counter()
    for stack, count in tree.items():
        for depth in range(1, len(stack) + 1):
            totals[stack[:depth]] += count
    _show(totals, (), n)


def _profile(jobs: list[dict], tmp: Path, delay: float) -> None:
    """In the runner: every rollout sampled; the first left out of the figures."""
    samples: collections.Counter = collections.Counter()
    active = False

    names: dict = {}  # code object -> "file:function", so that a sample costs little beside what it measures

    def sample(signum, frame):
        if not active:
            return
        stack = []
        while frame is not None:
            code = frame.f_code
            name = names.get(code)
            if name is None:
                name = names[code] = f"{os.path.basename(code.co_filename)}:{code.co_name}"
            stack.append(name)
            frame = frame.f_back
        samples[tuple(reversed(stack))] += 1

    signal.signal(signal.SIGALRM, sample)
    signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
    wall, fw = [], []
    for i, job in enumerate(jobs):
        active = i > 0
        started = os.times().elapsed
        result = run_job(job)
        elapsed = os.times().elapsed - started
        assert result["status"] == "passed", result
        if i:
            checks = sum(json.loads(line).get("duration_s") or 0
                         for line in Path(result["run_dir"], "trajectory.jsonl").read_text().splitlines()
                         if json.loads(line)["type"] == "check")
            wall.append(elapsed)
            fw.append((result["seconds"] - delay - checks) * 1000)
    signal.setitimer(signal.ITIMER_REAL, 0)
    (tmp / "profile.json").write_text(json.dumps({"wall": wall, "fw": fw,
                                                   "samples": [[list(k), v] for k, v in samples.items()]}))


def _show(totals: collections.Counter, prefix: tuple, n: int, depth: int = 0) -> None:
    children = [(k, v) for k, v in totals.items() if len(k) == len(prefix) + 1 and k[:len(prefix)] == prefix]
    for key, count in sorted(children, key=lambda kv: -kv[1]):
        ms = count / n
        if ms >= SHOWN_MS:
            print(f"{'  ' * depth}{ms:7.1f} {key[-1]}")
            _show(totals, key, n, depth + 1)


if __name__ == "__main__":
    main()
