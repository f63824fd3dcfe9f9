"""The batch driver: every (task, sample) of a task file, run by a backend, recorded once.

The driver alone writes `OUT/results.jsonl` (one flushed line per finished rollout) and
`OUT/manifest.json`; a rerun skips what results.jsonl holds and clears half-written rollout folders.
The local backend runs each rollout on a warm worker (`agentloop.batch.worker --serve`) in its own
process group: a rollout past its hard deadline is killed with its whole group (and its worker,
which is replaced) while the others go on; Ctrl-C kills every
running group and removes their half-written folders. `infra_error` is retried (at most twice).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import select as io_select
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentloop.batch.jobs import Job, Settings, settings_for_job, should_retry
from agentloop.batch.pool import WarmWorker, WorkerDied
from agentloop.batch.rollout import INFRA_ERROR, PASSED, TIMEOUT, group_id, hard_deadline, rollout_dir
from agentloop.batch.tasks import TaskRow
from agentloop.errors import UsageError

RESULTS, MANIFEST = "results.jsonl", "manifest.json"
POLL_S = 0.05


def select(rows: list[TaskRow], pattern: str | None, slice_text: str | None) -> list[TaskRow]:
    """Rows whose id matches `pattern` (re.search), then the `A:B` slice of those (Python slice rules)."""
    if pattern:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise UsageError(f"--filter {pattern!r}: not a regular expression ({exc})") from None
        rows = [r for r in rows if regex.search(r.id)]
    if slice_text:
        match = re.fullmatch(r"\s*(-?\d*)\s*:\s*(-?\d*)\s*", slice_text)
        if not match:
            raise UsageError(f"--slice {slice_text!r}: write A:B, e.g. 0:100 or 100: (rows A to B-1)")
        a, b = (int(x) if x else None for x in match.groups())
        rows = rows[a:b]
    return rows


def read_results(path: Path) -> list[dict[str, Any]]:
    """Complete lines of results.jsonl; a torn last line (a crash mid-write) is dropped."""
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return rows
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def drop_torn_tail(path: Path) -> None:
    """Cut a last line without its newline (the driver died mid-write) so the next line starts clean."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_manifest(out: Path, tasks: Path, settings: Settings, redo: bool) -> None:
    """Write the manifest, or refuse a rerun whose task file or settings differ (unless `redo`, which
    sets earlier results aside as results.<n>.jsonl: nothing is deleted)."""
    from agentloop.files import atomic_write

    manifest = {"tasks": str(tasks.resolve()), "tasks_sha256": _sha256(tasks), "settings": settings.identity()}
    manifest["settings_sha256"] = hashlib.sha256(json.dumps(manifest["settings"], sort_keys=True).encode()).hexdigest()
    old_path = out / MANIFEST
    if old_path.exists():
        try:
            old = json.loads(old_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            old = {}
        same = (old.get("tasks_sha256"), old.get("settings_sha256")) == (manifest["tasks_sha256"],
                                                                         manifest["settings_sha256"])
        if redo:
            results = out / RESULTS
            if results.exists():
                n = 1
                while (out / f"results.{n}.jsonl").exists():
                    n += 1
                os.replace(results, out / f"results.{n}.jsonl")
        elif not same:
            what = "task file" if old.get("tasks_sha256") != manifest["tasks_sha256"] else "settings"
            raise UsageError(f"{out}: holds a batch with another {what}; use another -o folder, the same "
                             "settings, or --redo-existing to run again (earlier results are kept aside)")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(old_path, json.dumps(manifest, indent=2) + "\n")


class Progress:
    """Plain progress lines: done/total, pass rate, cost, ETA."""

    def __init__(self, total: int, say: Callable[[str], None]):
        self.total, self.say, self.started = total, say, time.monotonic()
        self.done = self.passed = 0
        self.cost = 0.0

    def finished(self, result: dict[str, Any]) -> None:
        self.done += 1
        self.passed += result["status"] == PASSED
        self.cost += float(result.get("cost") or 0.0)
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.done * (self.total - self.done)
        self.say(f"[{self.done}/{self.total}] {result['id']}#{result['sample']} {result['status']} "
                 f"({result['seconds']:.1f}s) | passed {self.passed}/{self.done} "
                 f"({100 * self.passed / self.done:.0f}%) | ${self.cost:.4f} | ETA {eta:.0f}s")


def run_batch(tasks: Path, out: Path, settings: Settings, *, redo: bool = False, backend: str = "local",
              say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
              ray_address: str | None = None, ray_cpus: float = 1.0) -> dict[str, int]:
    """Run the batch; return counts by status of the rollouts finished in this invocation."""
    from agentloop.batch.tasks import load_tasks

    rows = select(load_tasks(tasks), settings.filter, settings.slice)
    if settings.sandbox != "off":
        from agentloop.workspace.sandbox import probe

        why = probe()
        if why:
            raise UsageError(f"sandbox: {why}; rollouts run model-written code, so a batch refuses to run "
                             "unsandboxed: install bubblewrap or pass --sandbox off")
    out = out.resolve()
    check_manifest(out, tasks, settings, redo)
    done = {(r.get("id"), r.get("sample")) for r in read_results(out / RESULTS)}
    jobs = []
    for row in rows:
        group = group_id(row)
        for k in range(settings.samples or row.samples):
            if (row.id, k) not in done:
                jobs.append(Job(row, k, group))
    total = sum(settings.samples or row.samples for row in rows)
    say(f"batch: {len(rows)} tasks, {total} rollouts, {total - len(jobs)} already done, {len(jobs)} to run, "
        f"{settings.workers} workers ({backend})")
    for job in jobs:  # half-written folders of an interrupted run
        folder = rollout_dir(out, *job.key)
        if folder.exists():
            shutil.rmtree(folder)
    progress = Progress(len(jobs), say)
    counts: dict[str, int] = {}
    drop_torn_tail(out / RESULTS)
    with open(out / RESULTS, "a", encoding="utf-8") as results:
        def record(result: dict[str, Any]) -> None:
            results.write(json.dumps(result, default=str) + "\n")
            results.flush()
            os.fsync(results.fileno())
            counts[result["status"]] = counts.get(result["status"], 0) + 1
            progress.finished(result)

        if backend == "ray":
            from agentloop.batch.ray_backend import run_ray

            run_ray(jobs, out, settings, record, address=ray_address, num_cpus=ray_cpus)
        else:
            LocalBackend(out, settings).run(jobs, record)
    say("batch: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) if counts else "batch: nothing to run")
    return counts


@dataclass
class _Slot:
    """A worker slot: its warm worker and the job it runs (None when idle)."""

    worker: WarmWorker
    job: Job | None = None
    name: str = ""
    deadline: float = 0.0
    started: float = 0.0


class LocalBackend:
    """Rollouts on `workers` warm worker processes (agentloop.batch.pool), each rollout a forked child
    leading its own process group; a rollout past its deadline is killed with its worker, which is
    replaced."""

    def __init__(self, out: Path, settings: Settings):
        self.out, self.settings = out, settings
        self.work = out / ".work"
        self._spawned = 0

    def _spawn(self) -> WarmWorker:
        self._spawned += 1
        return WarmWorker(self.work / f"worker-{os.getpid()}-{self._spawned}.log")

    def run(self, jobs: list[Job], record: Callable[[dict[str, Any]], None]) -> None:
        self.work.mkdir(exist_ok=True)
        queue = list(jobs)
        slots = [_Slot(self._spawn()) for _ in range(min(max(1, self.settings.workers), len(queue)))]
        try:
            while queue or any(slot.job for slot in slots):
                for slot in slots:
                    if slot.job is None and queue:
                        self.start(slot, queue.pop(0))
                busy = [slot for slot in slots if slot.job is not None]
                io_select.select([slot.worker for slot in busy], [], [], POLL_S)
                for slot in busy:
                    result = self.poll(slot)
                    if result is None:
                        continue
                    job = slot.job
                    assert job is not None
                    self._cleanup(slot)
                    slot.job = None
                    if should_retry(job, result):
                        queue.insert(0, job)
                        continue
                    result["attempts"] = job.attempts
                    record(result)
        except BaseException:
            for slot in slots:  # Ctrl-C / SIGTERM: every rollout group killed, its folder removed
                slot.worker.kill()
                if slot.job is not None:
                    self._cleanup(slot)
                    shutil.rmtree(rollout_dir(self.out, *slot.job.key), ignore_errors=True)
            raise
        for slot in slots:
            slot.worker.close()
            if slot.worker.log is not None:
                slot.worker.log.unlink(missing_ok=True)

    def start(self, slot: _Slot, job: Job) -> None:
        from agentloop.batch.worker import job_for

        job.attempts += 1
        slot.job, slot.name = job, f"{job.row.id}.{job.sample}.{os.getpid()}"
        result_file, log = self.work / f"{slot.name}.result.json", self.work / f"{slot.name}.log"
        result_file.unlink(missing_ok=True)
        log.unlink(missing_ok=True)
        now = time.monotonic()
        slot.started, slot.deadline = now, now + hard_deadline(job.row, self.settings.defaults, self.settings.grace)
        try:
            slot.worker.send(job_for(job.row, job.sample, self.out, settings_for_job(self.settings), job.group,
                                     result_file, log))
        except WorkerDied:
            pass  # poll() sees the closed pipe and reports the infra error

    def poll(self, slot: _Slot) -> dict[str, Any] | None:
        """The rollout's result when it has ended (or was killed at its deadline), else None."""
        try:
            ended = slot.worker.pump()
        except WorkerDied as exc:
            self._replace(slot)
            return self._base(slot, INFRA_ERROR, f"worker died without a result: {exc}")
        if not ended:
            if time.monotonic() < slot.deadline:
                return None
            self._replace(slot)
            return self._base(slot, TIMEOUT, f"killed after {time.monotonic() - slot.started:.0f}s: past the "
                                             "rollout's time limit")
        try:
            return json.loads((self.work / f"{slot.name}.result.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            tail = ""
            try:
                tail = (self.work / f"{slot.name}.log").read_text(errors="replace").strip().splitlines()[-1]
            except (OSError, IndexError):
                pass
            return self._base(slot, INFRA_ERROR, f"rollout exited {slot.worker.exit_code} without a result: {tail}")

    def _replace(self, slot: _Slot) -> None:
        slot.worker.kill()
        if slot.worker.log is not None:
            slot.worker.log.unlink(missing_ok=True)
        slot.worker = self._spawn()

    def _base(self, slot: _Slot, status: str, reason: str) -> dict[str, Any]:
        job = slot.job
        assert job is not None
        folder = rollout_dir(self.out, *job.key)
        runs = sorted((folder / "runs").glob("*/trajectory.jsonl")) if folder.exists() else []
        return {"id": job.row.id, "sample": job.sample, "group_id": job.group, "status": status,
                "reward": None, "turns": 0, "tokens": 0, "cost": 0.0,
                "seconds": round(time.monotonic() - slot.started, 3),
                "run_dir": str(runs[-1].parent) if runs else None, "outcome": None, "reason": reason, "flags": []}

    def _cleanup(self, slot: _Slot) -> None:
        assert slot.job is not None
        (self.work / f"{slot.name}.result.json").unlink(missing_ok=True)
        log = self.work / f"{slot.name}.log"
        folder = rollout_dir(self.out, *slot.job.key)
        if folder.is_dir() and log.exists():
            os.replace(log, folder / "worker.log")  # the rollout's own output, kept with its record
        log.unlink(missing_ok=True)
