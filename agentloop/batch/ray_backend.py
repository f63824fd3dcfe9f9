"""The Ray backend of `agentloop batch`: one Ray task per rollout, at most `workers` in flight.

Ray is an optional extra (`pip install "agentloop[ray]"`), imported only here. Each Ray worker
process keeps one warm worker, the same as the local backend's (`agentloop.batch.worker --serve`),
across the tasks it runs; each rollout is a forked child in its own process group, so a rollout past
its deadline is killed whole on the node that runs it (with its warm worker; the next task starts
another). The task returns the result and the driver alone writes results.jsonl, so resume works
the same on both backends.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentloop.batch.rollout import INFRA_ERROR, TIMEOUT, hard_deadline
from agentloop.errors import UsageError
from agentloop.workspace.reaper import _prctl

POLL_S = 0.5  # the progress display's refresh while waiting on Ray


def import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError('--backend ray needs Ray: pip install "agentloop[ray]"') from None
    return ray


def _own_group_dying_with_parent() -> None:
    """In the warm worker, between fork and exec: a new session (its own process group), and SIGKILL
    when the Ray worker dies (a cancelled task must not leave its rollout running). Nothing is
    imported here (_warm_worker loaded what _prctl uses): the Ray worker has threads, and this runs
    in a forked copy of it."""
    os.setsid()
    _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


_WARM = None  # this Ray worker process's warm agentloop worker, kept between tasks


def _warm_worker():
    global _WARM
    from agentloop.batch.pool import ForkServer

    if _WARM is None or _WARM.proc.poll() is not None:
        import _ctypes  # noqa: F401 - what _prctl uses, loaded before the fork

        _WARM = ForkServer(Path(tempfile.gettempdir()) / f"agentloop-ray-worker-{os.getpid()}.log",
                           preexec_fn=_own_group_dying_with_parent)
    return _WARM


def run_job_in_group(job: dict[str, Any], deadline_s: float) -> dict[str, Any]:
    """Run one job on this Ray worker's warm fork server (a forked child in its own process group);
    past `deadline_s` kill the rollout's group and the server (the next task starts another)."""
    global _WARM
    from agentloop.batch.pool import WorkerDied

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="agentloop-ray-") as tmp:
        job = {**job, "result": str(Path(tmp) / "result.json"), "log": str(Path(tmp) / "rollout.log")}
        worker = _warm_worker()
        status, reason, code = None, "", None
        try:
            worker.send("rollout", job)
            code = worker.wait_for("rollout", started + deadline_s)
            if code is None:
                status, reason = TIMEOUT, f"killed after {deadline_s:.0f}s: past the rollout's time limit"
                worker.kill()
                _WARM = None
        except WorkerDied as exc:
            worker.kill()
            _WARM = None
            status, reason = INFRA_ERROR, f"worker died without a result: {exc}"
        if status is None:
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
    return {"id": row["id"], "sample": job["sample"], "group_id": job.get("group"), "status": status, "reward": None,
            "turns": 0, "tokens": 0, "cost": 0.0, "seconds": round(time.monotonic() - started, 3), "run_dir": None,
            "outcome": None, "reason": reason, "flags": []}


def run_ray(jobs: list, out: Path, settings, record: Callable[[dict[str, Any]], None], display, *,
            address: str | None = None, num_cpus: float = 1.0) -> None:
    """Submit every job, keep at most settings.workers in flight (ray.wait), record each result."""
    from agentloop.batch.jobs import settings_for_job, should_retry
    from agentloop.batch.worker import job_for

    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        cpus = None
        if address is None:  # a local Ray: room for -w rollouts at once (they mostly wait on the model), and
            # as many Ray workers kept warm (Ray keeps about one idle worker per CPU; more are started anew)
            cpus = max(os.cpu_count() or 1, math.ceil(settings.workers * num_cpus))
        ray.init(address=address, num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}})
    remote = ray.remote(num_cpus=num_cpus, max_retries=0)(run_job_in_group)
    queue = list(jobs)
    in_flight: dict[Any, Any] = {}
    submitted: dict[tuple[str, int], float] = {}
    try:
        while queue or in_flight:
            while queue and len(in_flight) < max(1, settings.workers):
                job = queue.pop(0)
                job.attempts += 1
                spec = job_for(job.row, job.sample, out, settings_for_job(settings), job.group, Path("unused"))
                in_flight[remote.remote(spec, hard_deadline(job.row, settings.defaults, settings.grace))] = job
                submitted[job.key] = time.monotonic()
                display.started(job.key, job.attempts)
            ready, waiting = ray.wait(list(in_flight), num_returns=1, timeout=POLL_S)
            if ready and waiting:  # every rollout already back, not only the first: none waits for another's record
                ready += ray.wait(waiting, num_returns=len(waiting), timeout=0)[0]
            display.tick()
            results = {}
            for ref in ready:  # fetched before any is recorded (an fsync each); in flight until recorded (Ctrl-C)
                job = in_flight[ref]
                try:
                    result = ray.get(ref)
                    inner = result.pop("ray_inner_seconds", None)
                    if inner is not None:  # what Ray itself cost this rollout: round trip minus the task's time
                        result["ray_overhead_s"] = round(time.monotonic() - submitted[job.key] - inner, 4)
                except Exception as exc:  # noqa: BLE001 - a lost node, a crashed task: the infrastructure's
                    result = {"id": job.row.id, "sample": job.sample, "group_id": job.group, "status": INFRA_ERROR,
                              "reward": None, "turns": 0, "tokens": 0, "cost": 0.0, "seconds": 0.0,
                              "run_dir": None, "outcome": None, "reason": f"ray: {type(exc).__name__}: {exc}",
                              "flags": []}
                results[ref] = result
            for ref, result in results.items():
                job = in_flight.pop(ref)
                if should_retry(job, result):
                    queue.insert(0, job)
                    display.retrying(job.key)
                    continue
                result["attempts"] = job.attempts
                record(result)
    except BaseException:
        import shutil

        from agentloop.batch.rollout import rollout_dir

        for ref in in_flight:  # Ctrl-C: every running rollout stopped, its folder removed
            ray.cancel(ref, force=True)
        for job in in_flight.values():
            shutil.rmtree(rollout_dir(out, *job.key), ignore_errors=True)
        raise
    finally:
        if started_here:
            ray.shutdown()
