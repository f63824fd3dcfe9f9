"""Rollouts in their own processes: `python -m agentloop.batch.worker --serve` (or `... JOB.json`).

`--serve` is a warm fork server: it imports agentloop's rollout path and litellm once, then reads
jobs, one JSON line each (`{"name": ..., "job": {...}}`), from stdin, and may run many at once. It
hands each job to an idle *runner*, forking one when none is idle. A runner is the leader of a new
session (its own process group), dies with the server (PDEATHSIG), and is a child subreaper: it runs
rollouts one at a time, each with its output going to the job's log and its result written
atomically to the job's `result` path; after each it kills and reaps whatever the rollout left
running and puts back the signal handlers, environment and working folder, and after
ROLLOUTS_PER_RUNNER of them (or one that raised) it exits. So a rollout costs neither a Python
start-up and a 2-3 s litellm import nor a fork (whose copy-on-write faults made a forked rollout's
first model call some 13 ms slower), yet each has its own workspace, sandbox and process group (its
runner's, which runs nothing else meanwhile); a stuck one is killed whole, its runner with it, while
the others go on.

Protocol on stdin besides jobs: `{"kill": NAME}` drops a job not yet started, or kills the process
group of the runner running it (the server alone knows whether that runner has moved on). On stdout,
one JSON line each: `{"ready": true}` once the imports are done, `{"started": PID, "name": NAME}`
when a runner takes a job (PID is its process group), and `{"ended": PID, "name": NAME, "code": N}`
when the job has ended (N: 0 with a result written, else the runner's exit status, negative for a
signal). The server exits when stdin closes and its runners have ended.

`python -m agentloop.batch.worker JOB.json` runs one job in this process (the one-shot form).
The driver alone turns result files into lines of results.jsonl.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import dataclass
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
# once in the warm worker, not in every runner (about 1 s each). Missing ones are skipped.
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
ROLLOUTS_PER_RUNNER = 100  # then a fresh runner: what a rollout leaves in memory (caches, pools) stays bounded


def _say(event: dict[str, Any]) -> None:
    _PROTOCOL.write(json.dumps(event) + "\n")
    _PROTOCOL.flush()


def _runner(jobs: int, reports: int) -> int:
    """In a forked runner: own session, death with the server, every descendant its own to reap; then
    rollouts one after another, each job read from `jobs`, each end reported on `reports`."""
    from agentloop.workspace.reaper import PR_SET_CHILD_SUBREAPER, _prctl
    from agentloop.workspace.reaper_client import use_one_reaper

    os.setsid()
    parent = os.getppid()
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the server died between fork and prctl
        return 1
    _prctl(PR_SET_CHILD_SUBREAPER, 1)  # what a rollout leaves behind stays below us, to be killed
    use_one_reaper()  # checks in turn, under one reaper for all our rollouts (agentloop.workspace.reaper_client)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    low, high = sorted((jobs, reports))  # the server's other pipes and pidfds are not ours
    for start, end in ((3, low), (low + 1, high), (high + 1, os.sysconf("SC_OPEN_MAX"))):
        os.closerange(start, end)
    reader = os.fdopen(jobs, "rb")
    for served in range(1, ROLLOUTS_PER_RUNNER + 1):
        line = reader.readline()
        if not line:
            return 0  # the server is done with us
        code = _one_rollout(json.loads(line)["job"])
        if code:
            return code  # a rollout that raised may have left anything behind: no other runs here
        last = served == ROLLOUTS_PER_RUNNER
        os.write(reports, json.dumps({"done": code, "last": last}).encode() + b"\n")
    return 0


def _one_rollout(job: dict[str, Any]) -> int:
    """One rollout in the runner, its output to the job's log; then whatever it left running killed and
    reaped, and the process as it was before (signal handlers, environment, working folder)."""
    from agentloop.workspace.reaper import kill_all
    from agentloop.workspace.reaper_client import reaper_pid

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE)}
    environment, folder = dict(os.environ), os.getcwd()
    log = os.open(job.get("log") or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    code = 0
    try:
        run_and_write(job)
    except BaseException:  # noqa: BLE001 - reported through the log; the driver sees no result file
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        null = os.open(os.devnull, os.O_WRONLY)  # the log is the driver's once the rollout is reported
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)
    kill_all(spare=reaper_pid())  # (the checks' reaper, idle now, serves the next rollout too)
    for sig, handler in handlers.items():
        if handler is not None:
            signal.signal(sig, handler)
    if os.environ != environment:
        os.environ.clear()
        os.environ.update(environment)
    os.chdir(folder)
    return code


@dataclass
class _Runner:
    """The server's view of one runner."""

    pid: int
    jobs: int            # the runner reads its jobs from here
    reports: int | None  # and says here when one ended (None once it closed)
    pidfd: int | None    # readable when the runner exits (None without pidfd_open: polled)
    name: str | None = None  # the job it runs
    last: bool = False       # it said it takes no more
    buffer: bytes = b""


def _fork_runner() -> _Runner:
    jobs_r, jobs_w = os.pipe()
    reports_r, reports_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(jobs_w)
            os.close(reports_r)
            code = _runner(jobs_r, reports_w)
        finally:
            os._exit(code)
    os.close(jobs_r)
    os.close(reports_w)
    os.set_blocking(reports_r, False)
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    return _Runner(pid, jobs_w, reports_r, pidfd)


def serve() -> int:
    """The fork server's loop: jobs and kills from stdin; each job to an idle runner (forked when none
    is idle); runners' ends reported; until stdin closes and every runner has exited."""
    import select

    global _PROTOCOL
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides when the server ends
    _PROTOCOL = os.fdopen(os.dup(1), "w", encoding="utf-8")  # a library printing at import can't garble it
    os.dup2(2, 1)
    preload()
    _say({"ready": True})
    runners: dict[int, _Runner] = {}
    queue: list[tuple[str, dict[str, Any]]] = []
    pending, reading = b"", True
    while reading or queue or runners:
        if not reading and not queue:  # nothing more will come: idle runners may go
            for runner in runners.values():
                if runner.name is None and runner.jobs >= 0:
                    os.close(runner.jobs)
                    runner.jobs = -1
        watch = ([0] if reading else []) + [r.reports for r in runners.values() if r.reports is not None]
        watch += [r.pidfd for r in runners.values() if r.pidfd is not None]
        polling = any(r.pidfd is None for r in runners.values())
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
            if "kill" in message:
                _kill(message["kill"], queue, runners)
            else:
                queue.append((message["name"], message["job"]))
        for runner in runners.values():
            _read_reports(runner)
        while queue:
            runner = next((r for r in runners.values() if r.name is None and not r.last and r.jobs >= 0), None)
            if runner is None:
                runner = _fork_runner()
                runners[runner.pid] = runner
            name, job = queue[0]
            try:
                os.write(runner.jobs, json.dumps({"job": job}).encode() + b"\n")  # (it is idle: it reads)
            except BrokenPipeError:  # it died idle (killed from outside): _reap takes it, another the job
                runner.last = True
                continue
            queue.pop(0)
            runner.name = name
            _say({"started": runner.pid, "name": name})
        _reap(runners)
    return 0


def _kill(name: str, queue: list[tuple[str, dict[str, Any]]], runners: dict[int, _Runner]) -> None:
    """A job the driver gave up on: dropped if it has not started, else its runner's whole group killed."""
    for i, (queued, _) in enumerate(queue):
        if queued == name:
            del queue[i]
            _say({"ended": 0, "name": name, "code": -signal.SIGKILL})
            return
    for runner in runners.values():
        if runner.name == name:
            try:
                os.killpg(runner.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _read_reports(runner: _Runner) -> None:
    if runner.reports is None:
        return
    while True:
        try:
            chunk = os.read(runner.reports, 1 << 12)
        except BlockingIOError:
            break
        if not chunk:  # it exited (or is exiting): _reap reports it
            os.close(runner.reports)
            runner.reports = None
            break
        runner.buffer += chunk
    *lines, runner.buffer = runner.buffer.split(b"\n")
    for line in lines:
        report = json.loads(line)
        if runner.name is not None:
            _say({"ended": runner.pid, "name": runner.name, "code": int(report["done"])})
        runner.name, runner.last = None, bool(report.get("last"))


def _reap(runners: dict[int, _Runner]) -> None:
    """Runners that exited: their groups killed, reaped, the job one was running reported ended."""
    while runners:
        try:  # which runner ended, without reaping it: its pid (its group's id) cannot be reused yet
            ended = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            break
        if ended is None or not ended.si_pid:
            break
        pid = ended.si_pid
        try:
            os.killpg(pid, signal.SIGKILL)  # whatever its last rollout left running in its group
        except (ProcessLookupError, PermissionError):
            pass
        _, status = os.waitpid(pid, 0)
        runner = runners.pop(pid, None)
        if runner is None:
            continue
        _read_reports(runner)  # a rollout it finished before exiting
        for fd in (runner.jobs, runner.reports, runner.pidfd):
            if fd is not None and fd >= 0:
                os.close(fd)
        if runner.name is not None:
            _say({"ended": pid, "name": runner.name, "code": os.waitstatus_to_exitcode(status)})


def main(argv: list[str]) -> int:
    if argv == ["--serve"]:
        return serve()
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    run_and_write(job)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
