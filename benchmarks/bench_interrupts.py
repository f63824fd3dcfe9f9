"""Kill `agentloop fix` at many random moments; print how many scenarios left the user's tree intact.

Each scenario is a real subprocess against the scripted model server (tests/interrupt_scenarios.py):
SIGINT, SIGTERM and SIGKILL in turn, worktree or --in-place at random; a fifth of the kills at a random
moment of the whole run (start-up included), the rest 0-1.5 s after the run's first or second model
request, where it edits, checks, snapshots and applies the result back. Survived = the tree is
byte-identical to before or holds the whole result, `git fsck` is clean, nothing is left behind, and
the trajectory ends with its footer (SIGINT/SIGTERM).

Run:  python benchmarks/bench_interrupts.py [--count 200] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from interrupt_scenarios import run_many  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-v", "--verbose", action="store_true", help="print every scenario")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agentloop-kills-") as tmp:
        report = run_many(Path(tmp), args.count, args.seed,
                          progress=(lambda line: print(line, flush=True)) if args.verbose else (lambda line: None))
    print(f"scenarios tried: {report['tried']}, survived: {report['survived']}, lost: {report['lost']}")
    print(f"kill window (s): {report['windows_s']}; exit codes: {report['exit_codes']}")
    for key, n in sorted(report["by_signal"].items()):
        print(f"  {n:4d}  {key}")
    for failure in report["failures"]:
        print("LOST:", json.dumps(failure, default=str))


if __name__ == "__main__":
    main()
