"""The Ray backend's driver loop (`run_ray`) against a scripted stand-in for Ray: which results are
fetched before any is recorded, and what Ctrl-C leaves. No Ray needed; the real backend runs in
test_batch.py (test_ray_backend_runs_resumes_and_retries)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_repo

from agentloop.batch import ray_backend
from agentloop.batch.jobs import Job, Settings
from agentloop.batch.rollout import group_id, rollout_dir
from agentloop.batch.tasks import load_tasks


class Ref:
    def __init__(self, spec: dict):
        self.id = spec["row"]["id"]
        self.sample = spec["sample"]


class FakeRay:
    """Every submitted task is already done (rollouts that end together); `wait` hands back at most
    `num_returns` of them, as Ray does. Every call is logged in order."""

    def __init__(self):
        self.log: list[tuple] = []
        self.cancelled: list[str] = []

    def is_initialized(self) -> bool:
        return True

    def remote(self, **options):
        fake = self

        class Remote:
            def __init__(self, fn):
                pass

            def remote(self, spec, deadline_s):
                fake.log.append(("submit", spec["row"]["id"]))
                return Ref(spec)

        return Remote

    def wait(self, refs, num_returns, timeout):
        self.log.append(("wait", num_returns, timeout))
        return list(refs)[:num_returns], list(refs)[num_returns:]

    def get(self, ref):
        self.log.append(("get", ref.id))
        return {"id": ref.id, "sample": ref.sample, "status": "passed", "ray_inner_seconds": 0.0}

    def cancel(self, ref, force):
        self.cancelled.append(ref.id)


class Display:
    def started(self, key, attempts):
        pass

    def tick(self):
        pass

    def retrying(self, key):
        pass


@pytest.fixture
def jobs(tmp_path):
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"id": f"t{i}", "task": "x", "source": {"path": str(repo)},
                                         "checks": ["true"]}) + "\n" for i in range(3)))
    return [Job(row, 0, group_id(row)) for row in load_tasks(tasks)]


def run(monkeypatch, jobs, out: Path, record, fake: FakeRay | None = None) -> FakeRay:
    fake = fake or FakeRay()
    monkeypatch.setattr(ray_backend, "import_ray", lambda: fake)
    ray_backend.run_ray(jobs, out, Settings(model="openai/fake", api_base=None, sandbox="off", workers=3),
                        record, Display())
    return fake


def test_results_back_together_are_all_fetched_before_any_is_recorded(monkeypatch, jobs, tmp_path):
    """A result must not wait for another's record (an fsync) to be fetched: Ray's round trip is
    measured at the fetch, and the next wait would otherwise see only one at a time."""
    fake = FakeRay()
    recorded = []

    def record(result):
        recorded.append(result)
        fake.log.append(("record", result["id"]))

    run(monkeypatch, jobs, tmp_path / "out", record, fake)
    assert fake.log[:5] == [("submit", "t0"), ("submit", "t1"), ("submit", "t2"),
                            ("wait", 1, ray_backend.POLL_S), ("wait", 2, 0)]
    assert [e[0] for e in fake.log[5:]] == ["get"] * 3 + ["record"] * 3
    assert sorted(r["id"] for r in recorded) == ["t0", "t1", "t2"]
    assert all("ray_overhead_s" in r and r["attempts"] == 1 for r in recorded)


def test_ctrl_c_while_recording_cancels_and_removes_the_rollouts_not_yet_recorded(monkeypatch, jobs, tmp_path):
    """Fetched but not recorded is still in flight: Ctrl-C removes its folder, as for a running one."""
    out = tmp_path / "out"
    for job in jobs:
        (rollout_dir(out, *job.key) / "runs").mkdir(parents=True)
    recorded = []

    def record(result):
        recorded.append(result["id"])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(monkeypatch, jobs, out, record)
    assert len(recorded) == 1
    left = {job.row.id for job in jobs if rollout_dir(out, *job.key).exists()}
    assert left == set(recorded)  # the recorded one stays (its row is in results.jsonl), the others are gone
