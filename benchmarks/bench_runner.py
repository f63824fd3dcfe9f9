"""Memory and time of the command runner on a check that prints 1 GB.

Run: python benchmarks/bench_runner.py [--gib 1]
The check runs in a fresh child process that does only this (the run_command of a real run, with the
trajectory's capped check log as output sink), so its peak RSS (ru_maxrss) is agentloop's own.
Prints: bytes streamed, seconds, peak RSS before and after, the size of the kept output and log file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from agentloop.checks import run_command
from agentloop.trajectory import Trajectory

size = int(sys.argv[1])
run_dir = Path(sys.argv[2])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
traj = Trajectory(run_dir)
log = traj.check_log()
start = time.monotonic()
result = run_command(f"yes 'agentloop runner benchmark line' | head -c {size}", run_dir, timeout=600,
                     output_sink=log.feed)
log.close()
seconds = time.monotonic() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"bytes": result.total_bytes, "exit_code": result.exit_code, "seconds": round(seconds, 2),
                  "rss_before_mb": round(before / 1024, 1), "rss_peak_mb": round(after / 1024, 1),
                  "kept_output_chars": len(result.output), "log_bytes": log.path.stat().st_size}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=1.0, help="GiB the check prints (default 1)")
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


if __name__ == "__main__":
    main()
