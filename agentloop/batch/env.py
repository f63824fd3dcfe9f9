"""agentloop as an RL environment, in the shapes trainers use for multi-turn text environments.

An action is a model reply (edits in any format agentloop reads); an observation is the messages the
loop would send the model next (the opening task, then each turn's check feedback). Nothing here
re-implements the loop: the real Loop runs in a thread on the rollout's private repository (see
rollout.py), its model being a channel that hands each request to the trainer and waits for the
action. So prompts, edit application, visible checks, protected files, held-out grading and flags
are exactly those of `agentloop fix` and `agentloop batch`.

- `AgentloopEnv(env_config=None, extras={"task": ROW})`: SkyRL-gym's shape (`init`, `step` -> dict, `close`).
- `GymEnv(task, **env_config)`: `reset(seed, options) -> (obs, info)`,
  `step -> (obs, reward, terminated, truncated, info)`.
- `rollout(task, *, model, api_base=None, **limits) -> Episode`: a whole episode against an
  OpenAI-compatible endpoint (the batch rollout, in process).

Reward: 1.0 when the episode is accepted by the hidden checks (the visible ones when there are none)
and nothing was flagged (tests or harness touched); 0.0 otherwise, given on the last step.
"""

from __future__ import annotations

import queue
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agentloop.batch.rollout import PASSED, TIMEOUT, run_rollout
from agentloop.batch.tasks import LIMIT_FIELDS, TaskFileError, TaskRow, validate_row
from agentloop.run.model import ModelReply

_CLOSE = object()
DEFAULT_POLICY_NAME = "policy"


def as_row(task: TaskRow | dict[str, Any], base: Path | None = None) -> TaskRow:
    """A TaskRow from a row object or a row as written in a task file (validated the same way)."""
    if isinstance(task, TaskRow):
        return task
    row, problems = validate_row(task, "task", base or Path.cwd())
    if row is None or problems:
        raise TaskFileError(problems or ["task: not a usable row"])
    return row


def with_limits(row: TaskRow, limits: dict[str, Any]) -> TaskRow:
    unknown = set(limits) - set(LIMIT_FIELDS)
    if unknown:
        raise TypeError(f"unknown limit(s) {sorted(unknown)}; use {', '.join(LIMIT_FIELDS)}")
    return replace(row, limits=replace(row.limits, **limits)) if limits else row


def episode_reward(result: dict[str, Any]) -> float:
    return 1.0 if result.get("status") == PASSED else 0.0


def _common_prefix(before: list[dict[str, Any]], now: list[dict[str, Any]]) -> int:
    """How many leading messages two requests share. The next request usually goes on from the last
    one; after a refused or undone reply (models.yaml fresh_retry, undo_failed) it is the opening
    messages and a new one, and that new message is the observation."""
    k = 0
    while k < min(len(before), len(now)) and before[k] == now[k]:
        k += 1
    return k


class _Channel:
    """The loop's model: each request goes to the trainer; the trainer's action comes back as the reply."""

    def __init__(self, name: str):
        self.name = name
        self.requests: queue.Queue = queue.Queue()
        self.actions: queue.Queue = queue.Queue()

    def query(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, *,
              deadline: float | None = None, overrides: dict[str, Any] | None = None) -> ModelReply:
        """The trainer is the policy: `deadline` and `overrides` (sampling settings) are its to apply."""
        self.requests.put(("ask", [dict(m) for m in messages]))
        action = self.actions.get()
        if action is _CLOSE:
            raise KeyboardInterrupt  # the loop ends the run as interrupted, its record complete
        return ModelReply(content=str(action), finish_reason="stop")


class AgentloopEnv:
    """SkyRL-gym-style environment over one task row.

    env_config: `out` (folder for rollouts; default a new temporary one), `sandbox` (`bwrap` default,
    or `off`), `model` (the policy's name, which picks the edit format; default `policy`), `sample`,
    and limits (`max_turns`, ...) that override the row's."""

    def __init__(self, env_config: dict[str, Any] | None = None, extras: dict[str, Any] | None = None):
        config = dict(env_config or {})
        task = (extras or {}).get("task")
        if task is None:
            raise TypeError('AgentloopEnv needs extras={"task": ROW}')
        limits = {k: config.pop(k) for k in list(config) if k in LIMIT_FIELDS}
        self.row = with_limits(as_row(task), limits)
        self.out = Path(config.pop("out", None) or tempfile.mkdtemp(prefix="agentloop-env-"))
        self.sandbox = config.pop("sandbox", "bwrap")
        self.policy_name = config.pop("model", DEFAULT_POLICY_NAME)
        self.sample = int(config.pop("sample", 0))
        if config:
            raise TypeError(f"unknown env_config key(s) {sorted(config)}")
        self.channel = _Channel(self.policy_name)
        self.result: dict[str, Any] | None = None
        self.turns = 0
        self._sent: list[dict[str, Any]] = []  # the loop's last request
        self._thread: threading.Thread | None = None

    # -- the episode's thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            result = run_rollout(self.row, self.sample, self.out, model=self.policy_name, sandbox=self.sandbox,
                                 model_obj=self.channel, tools="off")
            self.channel.requests.put(("done", result))
        except BaseException as exc:  # noqa: BLE001 - handed to the trainer's thread
            self.channel.requests.put(("error", exc))

    def _next(self) -> tuple[str, Any]:
        kind, value = self.channel.requests.get()
        if kind == "error":
            raise value
        return kind, value

    # -- the interface ---------------------------------------------------------------------------

    def init(self, prompt: list[dict[str, Any]] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Start the episode. With an empty `prompt` the observations are the env's opening messages
        (system + task); a trainer's own non-empty prompt is returned as it is."""
        if self._thread is not None:
            raise RuntimeError("init() was already called; make a new env for a new episode")
        self._thread = threading.Thread(target=self._run, name=f"agentloop-env-{self.row.id}", daemon=True)
        self._thread.start()
        kind, value = self._next()
        info: dict[str, Any] = {"task_id": self.row.id, "sample": self.sample}
        if kind == "done":  # nothing to do (checks already pass), or the rollout could not start
            self.result = value
            info |= {"done": True, "status": value["status"], "reward": episode_reward(value)}
            return list(prompt or []), info
        self._sent = value
        return (list(prompt) if prompt else value), info

    def step(self, action: str) -> dict[str, Any]:
        """Apply one reply, run the visible checks; the next observation is their feedback."""
        if self._thread is None:
            raise RuntimeError("call init() first")
        if self.result is not None:
            return self._final([])
        self.turns += 1
        self.channel.actions.put(action)
        kind, value = self._next()
        if kind == "done":
            self.result = value
            self._thread.join()
            return self._final([])
        new = [m for m in value[_common_prefix(self._sent, value):] if m.get("role") != "assistant"]
        self._sent = value
        return {"observations": new, "reward": 0.0, "done": False,
                "metadata": {"turn": self.turns, "status": None}}

    def _final(self, observations: list[dict[str, Any]]) -> dict[str, Any]:
        result = self.result or {}
        return {"observations": observations, "reward": episode_reward(result), "done": True,
                "metadata": {"turn": self.turns, "status": result.get("status"), "outcome": result.get("outcome"),
                             "reason": result.get("reason"), "flags": result.get("flags"),
                             "rlef_reward": result.get("reward"), "run_dir": result.get("run_dir")}}

    def close(self) -> None:
        """End the episode (an unfinished one is recorded as interrupted) and wait for its thread."""
        if self._thread is not None and self._thread.is_alive():
            self.channel.actions.put(_CLOSE)
            while self._thread.is_alive():
                try:
                    kind, value = self.channel.requests.get(timeout=0.5)
                except queue.Empty:
                    continue
                if kind == "done":
                    self.result = value
                elif kind == "ask":
                    self.channel.actions.put(_CLOSE)
            self._thread.join()

    @property
    def run_dir(self) -> str | None:
        return (self.result or {}).get("run_dir")


class GymEnv:
    """Gymnasium-style adapter: observations are lists of chat messages, actions are replies."""

    def __init__(self, task: TaskRow | dict[str, Any], **env_config: Any):
        self.task, self.env_config = task, env_config
        self.env: AgentloopEnv | None = None

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None):
        self.close()
        config = dict(self.env_config)
        if seed is not None:
            config.setdefault("sample", seed)
        self.env = AgentloopEnv(config, {"task": self.task})
        obs, info = self.env.init((options or {}).get("prompt") or [])
        return obs, info

    def step(self, action: str):
        if self.env is None:
            raise RuntimeError("call reset() first")
        out = self.env.step(action)
        meta = out["metadata"]
        truncated = bool(out["done"] and meta.get("status") == TIMEOUT
                         or out["done"] and meta.get("outcome") == "budget_exhausted")
        terminated = bool(out["done"] and not truncated)
        return out["observations"], out["reward"], terminated, truncated, meta

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None


@dataclass
class Episode:
    status: str
    reward: float
    turns: int
    messages: list[dict[str, Any]] = field(default_factory=list)
    run_dir: str | None = None
    result: dict[str, Any] = field(default_factory=dict)


def rollout(task: TaskRow | dict[str, Any], *, model: str, api_base: str | None = None, out: str | Path | None = None,
            sandbox: str = "bwrap", sample: int = 0, **limits: Any) -> Episode:
    """One whole episode with the policy behind an OpenAI-compatible endpoint (`model` a litellm
    string such as `openai/<name>`), run as a batch rollout in this process."""
    row = with_limits(as_row(task), limits)
    folder = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="agentloop-episode-"))
    result = run_rollout(row, sample, folder, model=model, api_base=api_base, sandbox=sandbox)
    messages: list[dict[str, Any]] = []
    if result.get("run_dir"):
        from agentloop.record.runlog import Run

        messages = Run.load(Path(result["run_dir"])).final_conversation()
    return Episode(status=result["status"], reward=episode_reward(result), turns=result["turns"], messages=messages,
                   run_dir=result.get("run_dir"), result=result)
