"""What the batch driver hands a backend: one job per (task, sample), the run's settings, and the
retry rule. Shared by the local and the Ray backend, so neither imports the driver."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agentloop.batch.rollout import INFRA_ERROR
from agentloop.batch.tasks import TaskRow

INFRA_RETRIES = 2  # an infra_error (model server unreachable, sandbox down) is tried at most this many more times


@dataclass
class Job:
    row: TaskRow
    sample: int
    group: str
    attempts: int = 0

    @property
    def key(self) -> tuple[str, int]:
        return self.row.id, self.sample


@dataclass
class Settings:
    model: str | None
    api_base: str | None
    sandbox: str = "bwrap"
    workers: int = 1
    samples: int | None = None
    filter: str | None = None
    slice: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    grace: float = 60.0

    def identity(self) -> dict[str, Any]:
        """What a rerun must share with the first run for results to belong together (not workers)."""
        return {"model": self.model, "api_base": self.api_base, "sandbox": self.sandbox, "samples": self.samples,
                "filter": self.filter, "slice": self.slice, "defaults": self.defaults}


def settings_for_job(settings: Settings) -> dict[str, Any]:
    return {"model": settings.model, "api_base": settings.api_base, "sandbox": settings.sandbox,
            "defaults": settings.defaults}


def should_retry(job: Job, result: dict[str, Any]) -> bool:
    return result["status"] == INFRA_ERROR and job.attempts <= INFRA_RETRIES
