"""Rollouts in their own processes: `python -m agentloop.batch.worker --serve` (or `... JOB.json`).

`--serve` is a warm worker: it imports agentloop's rollout path and litellm once, then reads jobs,
one JSON line each, from stdin. For each job it forks a child that becomes the leader of a new
session (its own process group) and dies with the worker (PDEATHSIG), runs the rollout there with
its output going to the job's log, writes the result atomically to the job's `result` path, and
exits; the worker then kills whatever the rollout left in its group and reports. So a rollout costs
a fork, not a Python start-up and a 2-3 s litellm import, yet each still has its own process group
and a fresh copy of the interpreter's state, and a stuck one can be killed whole (the driver kills
the rollout's group and the worker's, and starts another worker).

Protocol on stdout, one JSON line each: `{"ready": true}` once the imports are done,
`{"started": PID}` when a job's child runs (PID is its process group), `{"ended": PID, "code": N}`
when it has exited (N: its exit status, negative for a signal).

`python -m agentloop.batch.worker JOB.json` runs one job in this process (the old one-shot form).
The driver alone turns result files into lines of results.jsonl.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1


def job_for(row, sample: int, out: Path, settings: dict[str, Any], group: str, result: Path,
            log: Path | None = None) -> dict[str, Any]:
    """The job of (row, sample): the row pinned to the commit id it resolved to when the file was read."""
    raw = row.to_dict()
    if row.source.revision:
        raw["source"]["commit"] = row.source.revision
    job = {"row": raw, "sample": sample, "out": str(out), "group": group, "result": str(result), **settings}
    if log is not None:
        job["log"] = str(log)
    return job


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


def run_and_write(job: dict[str, Any]) -> None:
    from agentloop.files import atomic_write

    result = run_job(job)
    atomic_write(Path(job["result"]), json.dumps(result, default=str))


# What a rollout's first model call and first check import (found with `python -X importtime`): done
# once in the warm worker, not in every forked child (about 1 s each). Missing ones are skipped.
FIRST_CALL_MODULES = ("openai.resources.chat", "litellm.proxy.openai_files_endpoints.common_utils", "httpcore",
                      "tenacity", "litellm._service_logger", "litellm.llms.openai_like.dynamic_config",
                      "litellm.llms.custom_httpx.aiohttp_transport", "agentloop.workspace.reaper", "ctypes")


def preload() -> None:
    """Import, once, what every rollout needs: the session, the edits, the checks, litellm."""
    import importlib

    import agentloop.batch.rollout
    import agentloop.run.session  # noqa: F401
    from agentloop.run.model import import_litellm

    import_litellm()
    for name in FIRST_CALL_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def _say(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _child(job: dict[str, Any]) -> int:
    """In the forked child: own session, death with the worker, output to the job's log, the rollout."""
    from agentloop.workspace.reaper import _prctl

    os.setsid()
    parent = os.getppid()
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the worker died between fork and prctl
        return 1
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    log = os.open(job.get("log") or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    try:
        run_and_write(job)
    except BaseException:  # noqa: BLE001 - reported through the log; the driver sees no result file
        import traceback

        traceback.print_exc()
        return 1
    return 0


def serve() -> int:
    """The warm worker's loop: one forked child per job line, until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides when a worker ends
    preload()
    _say({"ready": True})
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        job = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(job)
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        _say({"started": pid})
        _, status = os.waitpid(pid, 0)
        try:
            os.killpg(pid, signal.SIGKILL)  # whatever the rollout left running in its group
        except (ProcessLookupError, PermissionError):
            pass
        _say({"ended": pid, "code": os.waitstatus_to_exitcode(status)})
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--serve"]:
        return serve()
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    run_and_write(job)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
