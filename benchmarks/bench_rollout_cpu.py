"""CPU of one rollout, measured rather than timed: a warm worker (agentloop.batch.worker's preload)
forks a runner that runs the rollouts one after another, as `agentloop batch` does, and each
rollout's CPU is the runner's own plus that of every process it started and waited for (rusage),
plus that of the runner's long-lived reaper and the checks it ran (read from /proc in 10 ms clock
ticks, so a rollout's figure is within about 10 ms); median, min and max over N rollouts after the
runner's first (which pays for the fork's copy-on-write faults, its first connection and the
reaper's start, once per runner; printed apart). The mean is exact: the runner's CPU and all it
reaped (the reaper too, closed at the end) over the N rollouts.

The task is bench_batch.py's: the scripted server (no reply delay) fixes the bug at turn TURNS, and
the check is a `grep`, so almost all the CPU is the framework's. Count the processes of one rollout
with `strace -f -qq -e trace=execve -o FILE` around `... bench_rollout_cpu.py TURNS 1`.

Run:  PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_rollout_cpu.py [TURNS=1] [N=25] [SANDBOX=off|bwrap]
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bench_batch import TurnsLLM, runner_jobs  # noqa: E402

from agentloop.batch.worker import preload, run_job  # noqa: E402
from agentloop.workspace.reaper_client import one_reaper, reaper_pid, use_one_reaper  # noqa: E402

CHECK = "grep -q 'a + b' calc.py"


def main() -> None:
    turns = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    box = sys.argv[3] if len(sys.argv) > 3 else "off"
    preload()
    tmp = Path(tempfile.mkdtemp(prefix="bench-rollout-cpu-"))
    with TurnsLLM(turns, 0.0) as server:
        jobs = runner_jobs(tmp, n + 1, turns, CHECK, server.api_base, box)  # the first, a runner's first, left out
        pid = os.fork()
        if pid == 0:  # the runner: rollouts one after another, as agentloop.batch.worker's
            code = 1
            try:
                os.setsid()
                use_one_reaper()  # as a runner does (its checks, sandbox off, under one long-lived reaper)
                lines, cpu0 = [], _cpu()
                for i, job in enumerate(jobs):
                    me0, kids0, reaper0 = resource.getrusage(resource.RUSAGE_SELF), \
                        resource.getrusage(resource.RUSAGE_CHILDREN), _reaper_ms()
                    result = run_job(job)
                    assert result["status"] == "passed" and result["turns"] == turns, f"rollout {i}: {result}"
                    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
                    own = (me.ru_utime + me.ru_stime - me0.ru_utime - me0.ru_stime) * 1000
                    theirs = (kids.ru_utime + kids.ru_stime - kids0.ru_utime - kids0.ru_stime) * 1000
                    lines.append(f"{own} {theirs + _reaper_ms() - reaper0}")
                    if i == 0:
                        cpu0 = _cpu()
                if (reaper := one_reaper()) is not None:
                    reaper.close()  # reaped: its CPU and its checks' are counted in RUSAGE_CHILDREN
                lines.append(f"{_cpu() - cpu0}")
                (tmp / "cpu").write_text("\n".join(lines))
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert status == 0, f"the rollouts did not all pass in {turns} turn(s)"
    *figures, exact = (tmp / "cpu").read_text().splitlines()
    per_rollout = [tuple(map(float, line.split())) for line in figures]
    first, rest = per_rollout[0], per_rollout[1:]
    total = [own + theirs for own, theirs in rest]
    print(f"{n} rollouts of {turns} turn(s), sandbox {box}: CPU ms mean {float(exact) / n:.0f}, median "
          f"{statistics.median(total):.0f} (min {min(total):.0f}, max {max(total):.0f}); the rollout's own "
          f"{statistics.median(own for own, _ in rest):.0f}, its children "
          f"{statistics.median(theirs for _, theirs in rest):.0f}; a runner's first rollout "
          f"{first[0] + first[1]:.0f}; load {os.getloadavg()[0]:.1f}")


def _cpu() -> float:
    """CPU ms of this process and every child it reaped."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return (me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime) * 1000


def _reaper_ms() -> float:
    """CPU ms so far of the long-lived reaper and the checks it reaped (/proc, in clock ticks)."""
    pid = reaper_pid()
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) * 1000 / os.sysconf("SC_CLK_TCK")

if __name__ == "__main__":
    main()
