"""One rollout in its own process: `python -m agentloop.batch.worker JOB.json`.

The batch driver starts one of these per rollout in a new process group, so that a stuck rollout can
be killed whole (its checks and their children) without touching the others. The job file names the
row (as plain data), the sample, the output folder and the settings; the result is written atomically
to the job's `result` path, which the driver alone turns into a line of results.jsonl.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def job_for(row, sample: int, out: Path, settings: dict[str, Any], group: str, result: Path) -> dict[str, Any]:
    """The job of (row, sample): the row pinned to the commit id it resolved to when the file was read."""
    raw = row.to_dict()
    if row.source.revision:
        raw["source"]["commit"] = row.source.revision
    return {"row": raw, "sample": sample, "out": str(out), "group": group, "result": str(result), **settings}


def row_of(job: dict[str, Any]):
    from agentloop.batch.tasks import TaskFileError, validate_row

    row, problems = validate_row(job["row"], f"job {job['row'].get('id')}", Path("/"))
    if row is None or problems:
        raise TaskFileError(problems or ["job: unreadable row"])
    return row


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    from agentloop.batch.rollout import run_rollout

    return run_rollout(row_of(job), int(job["sample"]), Path(job["out"]), model=job.get("model"),
                       api_base=job.get("api_base"), sandbox=job.get("sandbox", "bwrap"),
                       defaults=job.get("defaults"), group=job.get("group"))


def main(argv: list[str]) -> int:
    from agentloop.files import atomic_write

    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    result = run_job(job)
    atomic_write(Path(job["result"]), json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
