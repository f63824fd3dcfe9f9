"""Rollouts in their own processes: `python -m agentloop.batch.worker --serve` (or `... JOB.json`).

`--serve` is a warm fork server: it imports agentloop's rollout path and litellm once, then reads
jobs, one JSON line each (`{"name": ..., "job": {...}}`), from stdin, and may run many at once. For
each job it forks a child that becomes the leader of a new session (its own process group) and dies
with the server (PDEATHSIG), runs the rollout there with its output going to the job's log, writes
the result atomically to the job's `result` path, and exits; the server then kills whatever the
rollout left in its group and reports. So a rollout costs a fork, not a Python start-up and a 2-3 s
litellm import, yet each still has its own process group, workspace and sandbox, and a fresh copy of
the interpreter's state; a stuck one is killed whole by the driver (its process group) while the
others go on.

Protocol on stdout, one JSON line each: `{"ready": true}` once the imports are done,
`{"started": PID, "name": NAME}` when a job's child runs (PID is its process group), and
`{"ended": PID, "name": NAME, "code": N}` when it has exited (N: exit status, negative for a signal).
The server exits when stdin closes and its children have ended.

`python -m agentloop.batch.worker JOB.json` runs one job in this process (the one-shot form).
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
    """The job of (row, sample): the row pinned to the commit id it resolved to when the file was read
    (`revision`: the rollout takes it as resolved, with no `git rev-parse` of its own)."""
    raw = row.to_dict()
    if row.source.revision:
        raw["source"]["commit"] = row.source.revision
    job = {"row": raw, "sample": sample, "out": str(out), "group": group, "result": str(result), **settings}
    if row.source.revision:
        job["revision"] = row.source.revision
    if log is not None:
        job["log"] = str(log)
    return job


def row_of(job: dict[str, Any]):
    from agentloop.batch.tasks import TaskFileError, validate_row

    row, problems = validate_row(job["row"], f"job {job['row'].get('id')}", Path("/"), pinned=job.get("revision"))
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
    """Import, once, what every rollout needs (the session, the edits, the checks, litellm), read
    agentloop's data files and make litellm's first call (see agentloop.batch.warmup)."""
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
    from agentloop.batch.warmup import warm_caches, warm_up_litellm

    warm_caches()
    warm_up_litellm()


_PROTOCOL: Any = None  # the server's events go here (stdout as the server started); stray prints to stderr


def _say(event: dict[str, Any]) -> None:
    _PROTOCOL.write(json.dumps(event) + "\n")
    _PROTOCOL.flush()


def _child(job: dict[str, Any]) -> int:
    """In the forked child: own session, death with the server, output to the job's log, the rollout."""
    from agentloop.workspace.reaper import _prctl

    os.setsid()
    parent = os.getppid()
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the server died between fork and prctl
        return 1
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    log = os.open(job.get("log") or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.closerange(3, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1024)  # the server's pidfds
    try:
        run_and_write(job)
    except BaseException:  # noqa: BLE001 - reported through the log; the driver sees no result file
        import traceback

        traceback.print_exc()
        return 1
    return 0


def _fork(job: dict[str, Any]) -> int:
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
    return pid


def serve() -> int:
    """The fork server's loop: a child per job line; reap and report children; until stdin closes."""
    import select

    global _PROTOCOL
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides when the server ends
    _PROTOCOL = os.fdopen(os.dup(1), "w", encoding="utf-8")  # a library printing at import can't garble it
    os.dup2(2, 1)
    preload()
    _say({"ready": True})
    children: dict[int, str] = {}
    pidfds: dict[int, int] = {}  # wake-up on a child's exit; without pidfd_open, a short poll
    pending, reading = b"", True
    while reading or children:
        watch = ([0] if reading else []) + list(pidfds.values())
        polling = len(pidfds) < len(children)
        select.select(watch, [], [], 0.05 if polling else None)
        if reading:
            os.set_blocking(0, False)
            try:
                data = os.read(0, 1 << 16)
                if not data:
                    reading = False
                pending += data
            except BlockingIOError:
                pass
        *lines, pending = pending.split(b"\n")
        for line in filter(bytes.strip, lines):
            message = json.loads(line)
            pid = _fork(message["job"])
            children[pid] = message["name"]
            try:
                pidfds[pid] = os.pidfd_open(pid)
            except (AttributeError, OSError):
                pass
            _say({"started": pid, "name": message["name"]})
        while children:
            try:  # which child ended, without reaping it: its pid (its group's id) cannot be reused yet
                ended = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                break
            if ended is None or not ended.si_pid:
                break
            pid = ended.si_pid
            try:
                os.killpg(pid, signal.SIGKILL)  # whatever the rollout left running in its group
            except (ProcessLookupError, PermissionError):
                pass
            _, status = os.waitpid(pid, 0)
            if pid in pidfds:
                os.close(pidfds.pop(pid))
            _say({"ended": pid, "name": children.pop(pid, ""), "code": os.waitstatus_to_exitcode(status)})
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--serve"]:
        return serve()
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    run_and_write(job)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
