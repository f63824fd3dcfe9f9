"""The Ray backend of `agentloop batch`: a pool of `workers` Ray actors, one actor call per rollout.

Ray is an optional extra (`pip install "agentloop[ray]"`), imported only here. Each actor is a
long-lived Ray worker process that owns one warm worker, the same as the local backend's
(`agentloop.batch.worker --serve`), started and warmed in its constructor: a rollout goes only to an
actor that is ready, so Ray never starts a worker process while rollouts wait (with one Ray task per
rollout it did, seconds at a time on a busy node), and an actor call costs Ray less than a task
(benchmarks/bench_ray_calls.py). Each rollout runs in a runner in its own process group, killed whole
on its node past its deadline; an actor that has not answered some time after that is killed
(`ray.kill`) and replaced. The actor returns the result and the driver alone writes results.jsonl,
so resume works the same on both backends.
"""

from __future__ import annotations

import json
import math
import os
import select
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentloop.batch.rollout import INFRA_ERROR, TIMEOUT, hard_deadline, unfinished
from agentloop.errors import UsageError
from agentloop.workspace.reaper import _prctl

POLL_S = 0.5  # the progress display's refresh while waiting on Ray
WARM_S = 120.0  # longest an actor's constructor waits for its warm worker's imports
UNANSWERED_S = 30.0  # past a rollout's hard deadline, how long the driver waits for its actor before killing it


def import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError('--backend ray needs Ray: pip install "agentloop[ray]"') from None
    return ray


def _own_group_dying_with_parent() -> None:
    """In the warm worker, between fork and exec: a new session (its own process group), and SIGKILL
    when the actor's process dies (a killed actor must not leave its rollout running). Nothing is
    imported here (RolloutActor loaded what _prctl uses): the Ray worker has threads, and this runs
    in a forked copy of it."""
    os.setsid()
    _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class RolloutActor:
    """One Ray actor: a warm fork server kept for the whole batch, one rollout at a time."""

    def __init__(self) -> None:
        import _ctypes  # noqa: F401 - what _prctl uses, loaded before any fork

        self.server = self._start()
        self._warm(time.monotonic() + WARM_S)

    @staticmethod
    def _start():
        from agentloop.batch.pool import ForkServer

        return ForkServer(Path(tempfile.gettempdir()) / f"agentloop-ray-worker-{os.getpid()}.log",
                          preexec_fn=_own_group_dying_with_parent)

    def _warm(self, deadline: float) -> None:
        """Until the fork server has imported everything (a server that died is replaced by run())."""
        from agentloop.batch.pool import WorkerDied

        try:
            while not self.server.ready and time.monotonic() < deadline:
                self.server.pump()
                if not self.server.ready:
                    select.select([self.server], [], [], 0.5)
        except WorkerDied:
            pass

    def pid(self) -> int:
        """This actor's process (the driver's sign that it is warm: the constructor has returned)."""
        return os.getpid()

    def run(self, job: dict[str, Any], deadline_s: float) -> dict[str, Any]:
        """Run one job on the warm fork server (in a runner, its own process group); past
        `deadline_s` kill the rollout's group and the server, and start another server."""
        from agentloop.batch.pool import WorkerDied

        started = time.monotonic()
        if self.server.proc.poll() is not None:
            self.server.kill()
            self.server = self._start()
        with tempfile.TemporaryDirectory(prefix="agentloop-ray-") as tmp:
            job = {**job, "result": str(Path(tmp) / "result.json"), "log": str(Path(tmp) / "rollout.log")}
            status, reason, code = None, "", None
            try:
                self.server.send("rollout", job)
                code = self.server.wait_for("rollout", started + deadline_s)
                if code is None:
                    status, reason = TIMEOUT, f"killed after {deadline_s:.0f}s: past the rollout's time limit"
            except WorkerDied as exc:
                status, reason = INFRA_ERROR, f"worker died without a result: {exc}"
            if status is not None:
                self.server.kill()
                self.server = self._start()  # warming while the driver records (the pipe holds the next job)
            else:
                try:
                    result = json.loads(Path(job["result"]).read_text(encoding="utf-8"))
                    result["ray_inner_seconds"] = round(time.monotonic() - started, 4)
                    return result
                except (OSError, json.JSONDecodeError):
                    try:
                        tail = (Path(job["log"]).read_text(errors="replace").strip().splitlines() or [""])[-1]
                    except OSError:
                        tail = ""
                    status, reason = INFRA_ERROR, f"rollout exited {code} without a result: {tail}"
        row = job["row"]
        return unfinished(row["id"], job["sample"], job.get("group"), status, reason, time.monotonic() - started)


@dataclass
class _Call:
    job: Any  # agentloop.batch.jobs.Job
    actor: Any
    submitted: float
    deadline_s: float


def run_ray(jobs: list, out: Path, settings, record: Callable[[dict[str, Any]], None], display, *,
            address: str | None = None, num_cpus: float = 1.0) -> None:
    """Start settings.workers actors, hand each warm one a job at a time, record each result; an
    actor that dies or stops answering is replaced."""
    from agentloop.batch.jobs import settings_for_job, should_retry
    from agentloop.batch.worker import job_for

    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        cpus = None
        if address is None:  # a local Ray: room for -w actors at once (rollouts mostly wait on the model)
            cpus = max(os.cpu_count() or 1, math.ceil(settings.workers * num_cpus))
        ray.init(address=address, num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}})
    actor_class = ray.remote(num_cpus=num_cpus, max_restarts=0, max_task_retries=0)(RolloutActor)
    starting: dict[Any, Any] = {}  # an actor's pid() call -> the actor, until its constructor returned
    idle: list[Any] = []
    in_flight: dict[Any, _Call] = {}  # a run() call -> its rollout, until recorded

    def start_actor() -> None:
        actor = actor_class.remote()
        starting[actor.pid.remote()] = actor

    def replace(actor: Any) -> None:
        ray.kill(actor, no_restart=True)
        start_actor()

    for _ in range(max(1, settings.workers)):
        start_actor()
    queue = list(jobs)
    try:
        while queue or in_flight:
            while queue and idle:
                job, actor = queue.pop(0), idle.pop()
                job.attempts += 1
                spec = job_for(job.row, job.sample, out, settings_for_job(settings), job.group, Path("unused"))
                deadline_s = hard_deadline(job.row, settings.defaults, settings.grace)
                in_flight[actor.run.remote(spec, deadline_s)] = _Call(job, actor, time.monotonic(), deadline_s)
                display.started(job.key, job.attempts)
            refs = [*in_flight, *starting]
            ready, waiting = ray.wait(refs, num_returns=1, timeout=POLL_S)
            if ready and waiting:  # every call already back, not only the first: none waits for another's record
                ready += ray.wait(waiting, num_returns=len(waiting), timeout=0)[0]
            display.tick()
            results: dict[Any, dict[str, Any]] = {}
            for ref in ready:  # fetched before any is recorded (an fsync each); in flight until recorded (Ctrl-C)
                if ref in starting:
                    actor = starting.pop(ref)
                    try:
                        ray.get(ref)
                        idle.append(actor)
                    except Exception as exc:  # noqa: BLE001 - the actor could not start: the next job is told
                        replace(actor)
                        if queue:
                            job = queue.pop(0)
                            job.attempts += 1
                            failed = unfinished(job.row.id, job.sample, job.group, INFRA_ERROR,
                                                f"ray: the actor did not start: {type(exc).__name__}: {exc}", 0.0)
                            in_flight[ref] = _Call(job, None, time.monotonic(), 0.0)
                            results[ref] = failed
                    continue
                call = in_flight[ref]
                try:
                    result = ray.get(ref)
                    inner = result.pop("ray_inner_seconds", None)
                    if inner is not None:  # what Ray itself cost this rollout: round trip minus the call's time
                        result["ray_overhead_s"] = round(time.monotonic() - call.submitted - inner, 4)
                    idle.append(call.actor)
                except Exception as exc:  # noqa: BLE001 - a lost node, a crashed actor: the infrastructure's
                    replace(call.actor)
                    result = unfinished(call.job.row.id, call.job.sample, call.job.group, INFRA_ERROR,
                                        f"ray: {type(exc).__name__}: {exc}", time.monotonic() - call.submitted)
                results[ref] = result
            now = time.monotonic()
            for ref, call in in_flight.items():  # the actor kills a rollout past its deadline; if it has not answered
                if ref not in results and now - call.submitted > call.deadline_s + UNANSWERED_S:
                    replace(call.actor)
                    results[ref] = unfinished(call.job.row.id, call.job.sample, call.job.group, TIMEOUT,
                                              f"killed after {now - call.submitted:.0f}s: past the rollout's time "
                                              "limit (its Ray actor did not answer and was replaced)",
                                              now - call.submitted)
            for ref, result in results.items():
                job = in_flight.pop(ref).job
                if should_retry(job, result):
                    queue.insert(0, job)
                    display.retrying(job.key)
                    continue
                result["attempts"] = job.attempts
                record(result)
    except BaseException:
        import shutil

        from agentloop.batch.rollout import rollout_dir

        for call in in_flight.values():  # Ctrl-C: every running rollout stopped (with its actor), its folder removed
            if call.actor is not None:
                ray.kill(call.actor, no_restart=True)
        if in_flight:  # a killed actor's call fails once its process is gone
            ray.wait(list(in_flight), num_returns=len(in_flight), timeout=5)
        for call in in_flight.values():
            shutil.rmtree(rollout_dir(out, *call.job.key), ignore_errors=True)
        raise
    finally:
        for actor in [*idle, *starting.values(), *(c.actor for c in in_flight.values() if c.actor is not None)]:
            ray.kill(actor, no_restart=True)
        if started_here:
            ray.shutdown()
