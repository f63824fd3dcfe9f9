"""Memory and time of the command runner on a check that prints 1 GB.

Run: python benchmarks/bench_runner.py [--gib 1] [--overhead 20]
The check runs in a fresh child process that does only this (the run_command of a real run, with the
trajectory's capped check log as output sink), so its peak RSS is agentloop's own: VmHWM from
/proc/self/status, the high-water mark of this process image (ru_maxrss is not used: on Linux it
carries over the forking parent's peak across exec).
Prints: bytes streamed, seconds, peak RSS before and after, the size of the kept output and log file;
then the fixed cost of one check (`true`) without and with the bubblewrap sandbox.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
from pathlib import Path
from agentloop.workspace.checks import run_command
from agentloop.record.trajectory import Trajectory

size = int(sys.argv[1])
run_dir = Path(sys.argv[2])
def hwm_kb():
    return int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")))

before = hwm_kb()
traj = Trajectory(run_dir)
log = traj.check_log()
start = time.monotonic()
result = run_command(f"yes 'agentloop runner benchmark line' | head -c {size}", run_dir, timeout=600,
                     output_sink=log.feed)
log.close()
seconds = time.monotonic() - start
after = hwm_kb()
print(json.dumps({"bytes": result.total_bytes, "exit_code": result.exit_code, "seconds": round(seconds, 2),
                  "rss_before_mb": round(before / 1024, 1), "rss_peak_mb": round(after / 1024, 1),
                  "kept_output_chars": len(result.output), "log_bytes": log.path.stat().st_size}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=1.0, help="GiB the check prints (default 1)")
    parser.add_argument("--overhead", type=int, default=20, help="runs of `true` per sandbox mode (default 20)")
    args = parser.parse_args()
    size = int(args.gib * (1 << 30))
    with tempfile.TemporaryDirectory(prefix="agentloop-bench-runner-") as tmp:
        out = subprocess.run([sys.executable, "-c", CHILD, str(size), tmp], capture_output=True, text=True,
                             check=True)
    data = json.loads(out.stdout)
    mib_s = data["bytes"] / (1 << 20) / max(data["seconds"], 1e-9)
    print(f"check printed {data['bytes']:,} bytes (exit {data['exit_code']}) in {data['seconds']} s "
          f"({mib_s:.0f} MiB/s)")
    print(f"agentloop peak RSS: {data['rss_peak_mb']} MB (at start {data['rss_before_mb']} MB)")
    print(f"kept for the model: {data['kept_output_chars']:,} chars; check log on disk: {data['log_bytes']:,} bytes")
    overhead(args.overhead)


def overhead(n: int) -> None:
    """Median wall time of running `true` as a check: the reaper, and the sandbox, cost this much."""
    import statistics
    import time
    from pathlib import Path

    from agentloop.workspace import sandbox
    from agentloop.workspace.checks import run_command

    with tempfile.TemporaryDirectory(prefix="agentloop-bench-runner-") as tmp:
        root = Path(tmp)
        (root / ".git").mkdir()
        modes = {"off": []}
        reason = sandbox.probe()
        if reason is None:
            modes["bwrap"] = sandbox.resolve("bwrap", root).wrapper()
        for mode, wrapper in modes.items():
            times = []
            for _ in range(n):
                start = time.perf_counter()
                assert run_command("true", root, wrapper=wrapper).passed
                times.append(time.perf_counter() - start)
            print(f"one check (`true`), sandbox {mode}: median {statistics.median(times) * 1000:.1f} ms over {n}")
        if reason is not None:
            print(f"sandbox bwrap not measured: {reason}")


if __name__ == "__main__":
    main()
