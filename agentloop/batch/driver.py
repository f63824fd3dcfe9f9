"""The batch driver: every (task, sample) of a task file, run by a backend, recorded once.

The driver alone writes `OUT/results.jsonl` (one flushed line per finished rollout) and
`OUT/manifest.json`; a rerun skips what results.jsonl holds and clears half-written rollout folders.
The local backend runs each rollout as a child of a warm fork server (`agentloop.batch.worker
--serve`, litellm imported once), in its own process group: a rollout past its hard deadline is
killed with its whole group while the others go on; Ctrl-C kills every
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

from agentloop.batch.display import Display
from agentloop.batch.jobs import Job, Settings, settings_for_job, should_retry
from agentloop.batch.pool import ForkServer, WorkerDied
from agentloop.batch.rollout import INFRA_ERROR, TIMEOUT, group_id, hard_deadline, rollout_dir, unfinished
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


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_batch(tasks: Path, out: Path, settings: Settings, *, redo: bool = False, backend: str = "local",
              say: Callable[[str], None] | None = None, ray_address: str | None = None,
              ray_cpus: float = 1.0) -> dict[str, int]:
    """Run the batch; return counts by status of the rollouts finished in this invocation. Progress
    goes to `say` as plain lines, or, when `say` is not given and the terminal allows, live on stderr."""
    from agentloop.batch.display import Display, choose_live
    from agentloop.batch.tasks import load_tasks

    live = say is None and choose_live()
    say = say or _to_stderr

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
    display = Display(len(jobs), live=live, say=say)
    counts: dict[str, int] = {}
    drop_torn_tail(out / RESULTS)
    with open(out / RESULTS, "a", encoding="utf-8") as results:
        def record(result: dict[str, Any]) -> None:
            results.write(json.dumps(result, default=str) + "\n")
            results.flush()
            os.fsync(results.fileno())
            counts[result["status"]] = counts.get(result["status"], 0) + 1
            display.finished(result)

        try:
            if backend == "ray":
                from agentloop.batch.ray_backend import run_ray

                run_ray(jobs, out, settings, record, display, address=ray_address, num_cpus=ray_cpus)
            else:
                LocalBackend(out, settings).run(jobs, record, display)
        finally:
            display.close()
    say("batch: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) if counts else "batch: nothing to run")
    return counts


@dataclass
class _Running:
    job: Job
    name: str
    deadline: float
    started: float


class LocalBackend:
    """Rollouts as children of one warm fork server (agentloop.batch.pool), at most `workers` at once,
    each the leader of its own process group; one past its deadline is killed with its whole group."""

    def __init__(self, out: Path, settings: Settings):
        self.out, self.settings = out, settings
        self.work = out / ".work"
        self._servers = 0

    def _server(self) -> ForkServer:
        self._servers += 1
        return ForkServer(self.work / f"server-{os.getpid()}-{self._servers}.log")

    def run(self, jobs: list[Job], record: Callable[[dict[str, Any]], None], display: Display) -> None:
        self.work.mkdir(exist_ok=True)
        queue = list(jobs)
        running: dict[str, _Running] = {}
        server = self._server() if queue else None
        try:
            while queue or running:
                assert server is not None
                while queue and len(running) < max(1, self.settings.workers):
                    item = self.start(server, queue.pop(0))
                    running[item.name] = item
                    display.started(item.job.key, item.job.attempts)
                io_select.select([server], [], [], POLL_S)
                display.tick()
                finished: list[tuple[_Running, dict[str, Any]]] = []
                try:
                    ended = server.pump()
                except WorkerDied as exc:  # every rollout it ran is lost: infra errors, a new server
                    server.kill()
                    self._drop_log(server)
                    finished = [(item, self._base(item, INFRA_ERROR, f"worker died without a result: {exc}"))
                                for item in running.values()]
                    server = self._server()
                    ended = {}
                for name, code in ended.items():
                    if name in running:
                        finished.append((running[name], self.result(running[name], code)))
                now = time.monotonic()
                for item in running.values():
                    if now >= item.deadline and item.name not in ended and all(f[0] is not item for f in finished):
                        server.kill_rollout(item.name)
                        finished.append((item, self._base(item, TIMEOUT, f"killed after {now - item.started:.0f}s: "
                                                                          "past the rollout's time limit")))
                for item, result in finished:
                    del running[item.name]
                    self._cleanup(item)
                    if should_retry(item.job, result):
                        queue.insert(0, item.job)
                        display.retrying(item.job.key)
                        continue
                    result["attempts"] = item.job.attempts
                    record(result)
        except BaseException:
            if server is not None:  # Ctrl-C / SIGTERM: every rollout group killed, its folder removed
                server.kill()
            for item in running.values():
                self._cleanup(item)
                shutil.rmtree(rollout_dir(self.out, *item.job.key), ignore_errors=True)
            raise
        finally:
            if server is not None:
                server.close()
                self._drop_log(server)

    def start(self, server: ForkServer, job: Job) -> _Running:
        from agentloop.batch.worker import job_for

        job.attempts += 1
        name = f"{job.row.id}.{job.sample}.{job.attempts}.{os.getpid()}"
        result_file, log = self.work / f"{name}.result.json", self.work / f"{name}.log"
        result_file.unlink(missing_ok=True)
        log.unlink(missing_ok=True)
        now = time.monotonic()
        item = _Running(job, name, now + hard_deadline(job.row, self.settings.defaults, self.settings.grace), now)
        try:
            server.send(name, job_for(job.row, job.sample, self.out, settings_for_job(self.settings), job.group,
                                      result_file, log))
        except WorkerDied:
            pass  # the next pump() sees the closed pipe and reports the infra error
        return item

    def result(self, item: _Running, code: int) -> dict[str, Any]:
        """The result file the rollout wrote, or an infra error when it exited without one."""
        try:
            return json.loads((self.work / f"{item.name}.result.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            tail = ""
            try:
                tail = (self.work / f"{item.name}.log").read_text(errors="replace").strip().splitlines()[-1]
            except (OSError, IndexError):
                pass
            return self._base(item, INFRA_ERROR, f"rollout exited {code} without a result: {tail}")

    @staticmethod
    def _drop_log(server: ForkServer) -> None:
        if server.log is not None:
            server.log.unlink(missing_ok=True)

    def _base(self, item: _Running, status: str, reason: str) -> dict[str, Any]:
        folder = rollout_dir(self.out, *item.job.key)
        runs = sorted((folder / "runs").glob("*/trajectory.jsonl")) if folder.exists() else []
        return unfinished(item.job.row.id, item.job.sample, item.job.group, status, reason,
                          time.monotonic() - item.started, str(runs[-1].parent) if runs else None)

    def _cleanup(self, item: _Running) -> None:
        (self.work / f"{item.name}.result.json").unlink(missing_ok=True)
        log = self.work / f"{item.name}.log"
        folder = rollout_dir(self.out, *item.job.key)
        if folder.is_dir() and log.exists():
            os.replace(log, folder / "worker.log")  # the rollout's own output, kept with its record
        log.unlink(missing_ok=True)
