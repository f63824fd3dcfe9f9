"""CPU of one rollout, measured rather than timed: a warm worker (agentloop.batch.worker's preload)
forks each rollout as `agentloop batch` does, and the child's rusage from wait4 (its own CPU plus
that of every process it started and waited for) is kept; median, min and max over N rollouts.

The task is bench_batch.py's: the scripted server (no reply delay) fixes the bug at turn TURNS, and
the check is a `grep`, so almost all the CPU is the framework's. Count the processes of one rollout
with `strace -f -qq -e trace=execve -o FILE` around `... bench_rollout_cpu.py TURNS 1`.

Run:  PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_rollout_cpu.py [TURNS=1] [N=25] [SANDBOX=off|bwrap]
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bench_batch import BUGGY, TurnsLLM  # noqa: E402

from agentloop.batch.tasks import validate_row  # noqa: E402
from agentloop.batch.worker import job_for, preload, run_job  # noqa: E402

CHECK = "grep -q 'a + b' calc.py"


def main() -> None:
    turns = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    box = sys.argv[3] if len(sys.argv) > 3 else "off"
    preload()
    tmp = Path(tempfile.mkdtemp(prefix="bench-rollout-cpu-"))
    repo = tmp / "repo"
    repo.mkdir()
    (repo / "calc.py").write_text(BUGGY)
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "s"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    total, own = [], []
    with TurnsLLM(turns, 0.0) as server:
        for i in range(n):
            row, problems = validate_row({"id": f"t{i}", "task": "add must add", "source": {"path": str(repo)},
                                          "checks": [CHECK], "limits": {"max_turns": turns + 1}}, "row", tmp)
            assert row is not None, problems
            settings = {"model": "openai/fake", "api_base": server.api_base, "sandbox": box}
            job = job_for(row, 0, tmp / "out", settings, row.id, tmp / f"r{i}.json")
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    os.setsid()
                    result = run_job(job)
                    code = 0 if result["status"] == "passed" and result["turns"] == turns else 3
                    me = resource.getrusage(resource.RUSAGE_SELF)
                    (tmp / f"own{i}").write_text(str((me.ru_utime + me.ru_stime) * 1000))
                finally:
                    os._exit(code)
            _, status, usage = os.wait4(pid, 0)
            assert status == 0, f"rollout {i} did not pass in {turns} turn(s)"
            total.append((usage.ru_utime + usage.ru_stime) * 1000)
            own.append(float((tmp / f"own{i}").read_text()))
    print(f"{n} rollouts of {turns} turn(s), sandbox {box}: CPU ms median {statistics.median(total):.0f} "
          f"(min {min(total):.0f}, "
          f"max {max(total):.0f}); the rollout's own {statistics.median(own):.0f}, its children "
          f"{statistics.median(t - o for t, o in zip(total, own, strict=True)):.0f}; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
