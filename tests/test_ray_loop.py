"""The Ray backend's driver loop (`run_ray`) against a scripted stand-in for Ray: which results are
fetched before any is recorded, what Ctrl-C leaves, and how the actor pool replaces an actor that
stops answering, dies or cannot start. No Ray needed; the real backend runs in test_batch.py
(test_ray_backend_runs_resumes_and_retries, test_ray_backend_kills_a_stuck_rollout_whole)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import make_repo

from agentloop.batch import ray_backend
from agentloop.batch.jobs import Job, Settings
from agentloop.batch.rollout import group_id, rollout_dir
from agentloop.batch.tasks import load_tasks


class Ref:
    def __init__(self, actor: FakeActor, spec: dict | None = None):
        self.actor = actor
        self.id = spec["row"]["id"] if spec else None
        self.sample = spec["sample"] if spec else None


class FakeActor:
    """A scripted actor: `pid()` answers at once, `run()` passes at once unless the script says otherwise."""

    def __init__(self, fake: FakeRay, number: int):
        self.fake, self.number = fake, number
        actor = self

        class Method:
            def __init__(self, name):
                self.name = name

            def remote(self, *args):
                if self.name == "pid":
                    return Ref(actor)
                fake.log.append(("submit", args[0]["row"]["id"]))
                fake.ran.append((args[0]["row"]["id"], actor.number))
                return Ref(actor, args[0])

        self.pid, self.run = Method("pid"), Method("run")


class FakeRay:
    """Every call is already done (rollouts that end together) unless `script` says a rollout id
    hangs (never answers) or raises (its actor died), or `broken` lists actors that fail to start;
    `wait` hands back at most `num_returns` of them, as Ray does. Every call is logged in order."""

    def __init__(self, script: dict[str, list[str]] | None = None, broken: set[int] = frozenset()):
        self.log: list[tuple] = []
        self.ran: list[tuple[str, int]] = []
        self.killed: list[int] = []
        self.actors: list[FakeActor] = []
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.broken = broken
        self.hanging: set[int] = set()

    def is_initialized(self) -> bool:
        return True

    def remote(self, **options):
        fake = self

        class ActorClass:
            def __init__(self, cls):
                pass

            def remote(self):
                actor = FakeActor(fake, len(fake.actors))
                fake.actors.append(actor)
                return actor

        return ActorClass

    def _done(self, ref: Ref) -> bool:
        if ref.id is not None and id(ref) not in self.hanging and (self.script.get(ref.id) or ["pass"])[0] == "hang":
            self.script[ref.id].pop(0)
            self.hanging.add(id(ref))
        return id(ref) not in self.hanging or ref.actor.number in self.killed

    def wait(self, refs, num_returns, timeout):
        self.log.append(("wait", num_returns, timeout))
        assert len(self.log) < 5000, "the loop waits forever"
        done = [r for r in refs if self._done(r)]
        if not done and timeout:
            time.sleep(min(timeout, 0.01))
        return done[:num_returns], [r for r in refs if r not in done[:num_returns]]

    def get(self, ref):
        if ref.id is None:
            if ref.actor.number in self.broken:
                raise RuntimeError("the actor died in its constructor")
            return ref.actor.number
        self.log.append(("get", ref.id))
        if ref.actor.number in self.killed:
            raise RuntimeError("the actor was killed")
        if (self.script.get(ref.id) or ["pass"])[0] == "raise":
            self.script[ref.id].pop(0)
            raise RuntimeError("the actor died")
        return {"id": ref.id, "sample": ref.sample, "status": "passed", "ray_inner_seconds": 0.0}

    def kill(self, actor, no_restart):
        self.killed.append(actor.number)


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


def run(monkeypatch, jobs, out: Path, record, fake: FakeRay | None = None, workers: int = 3) -> FakeRay:
    fake = fake or FakeRay()
    monkeypatch.setattr(ray_backend, "import_ray", lambda: fake)
    ray_backend.run_ray(jobs, out, Settings(model="openai/fake", api_base=None, sandbox="off", workers=workers),
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
    first = fake.log.index(("submit", "t0"))  # after the three actors said they were warm
    assert fake.log[first:first + 5] == [("submit", "t0"), ("submit", "t1"), ("submit", "t2"),
                                         ("wait", 1, ray_backend.POLL_S), ("wait", 2, 0)]
    assert [e[0] for e in fake.log[first + 5:]] == ["get"] * 3 + ["record"] * 3
    assert sorted(r["id"] for r in recorded) == ["t0", "t1", "t2"]
    assert all("ray_overhead_s" in r and r["attempts"] == 1 for r in recorded)
    assert len(fake.actors) == 3 and sorted(n for _, n in fake.ran) == [0, 1, 2]  # one call per actor
    assert sorted(fake.killed) == [0, 1, 2]  # the pool is stopped with the batch


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
    fake = ray_backend.import_ray()
    stopped = {n for rollout, n in fake.ran if rollout not in recorded}
    assert len(stopped) == 2 and stopped <= set(fake.killed)  # the rollouts not recorded: their actors killed


def results_of(monkeypatch, jobs, tmp_path, fake: FakeRay, workers: int) -> dict[str, dict]:
    recorded: dict[str, dict] = {}
    run(monkeypatch, jobs, tmp_path / "out", lambda r: recorded.setdefault(r["id"], r), fake, workers)
    return recorded


def test_an_actor_that_does_not_answer_is_killed_and_replaced_and_the_batch_goes_on(monkeypatch, jobs, tmp_path):
    """Past a rollout's hard deadline (plus a margin) an actor still silent is killed, the rollout is
    recorded as a timeout, and the next rollouts run on a new actor."""
    monkeypatch.setattr(ray_backend, "hard_deadline", lambda row, defaults, grace: 0.05)
    monkeypatch.setattr(ray_backend, "UNANSWERED_S", 0.0)
    fake = FakeRay(script={"t0": ["hang"]})
    recorded = results_of(monkeypatch, jobs, tmp_path, fake, workers=1)
    assert {k: (r["status"], r["attempts"]) for k, r in recorded.items()} == {
        "t0": ("timeout", 1), "t1": ("passed", 1), "t2": ("passed", 1)}
    assert "did not answer" in recorded["t0"]["reason"]
    assert fake.ran == [("t0", 0), ("t1", 1), ("t2", 1)]  # the replacement took over
    assert fake.killed == [0, 1]  # the silent actor, then the replacement with the batch


def test_an_actor_that_dies_is_replaced_and_its_rollout_retried(monkeypatch, jobs, tmp_path):
    fake = FakeRay(script={"t1": ["raise"]})
    recorded = results_of(monkeypatch, jobs, tmp_path, fake, workers=1)
    assert {k: (r["status"], r["attempts"]) for k, r in recorded.items()} == {
        "t0": ("passed", 1), "t1": ("passed", 2), "t2": ("passed", 1)}
    assert fake.ran == [("t0", 0), ("t1", 0), ("t1", 1), ("t2", 1)]


def test_an_actor_that_cannot_start_costs_the_next_rollout_an_attempt(monkeypatch, jobs, tmp_path):
    """A broken node must not hang the batch: each failed start is an infra_error attempt of a
    queued rollout (retried as any), and another actor is started."""
    fake = FakeRay(broken={0})
    recorded = results_of(monkeypatch, jobs, tmp_path, fake, workers=1)
    assert {k: (r["status"], r["attempts"]) for k, r in recorded.items()} == {
        "t0": ("passed", 2), "t1": ("passed", 1), "t2": ("passed", 1)}
    assert [n for _, n in fake.ran] == [1, 1, 1] and fake.killed == [0, 1]


def test_actors_that_never_start_end_the_batch_with_infra_errors(monkeypatch, jobs, tmp_path):
    fake = FakeRay(broken=set(range(100)))
    recorded = results_of(monkeypatch, jobs, tmp_path, fake, workers=2)
    assert {k: (r["status"], r["attempts"]) for k, r in recorded.items()} == {
        k: ("infra_error", 3) for k in ("t0", "t1", "t2")}
    assert "did not start" in recorded["t0"]["reason"] and fake.ran == []
