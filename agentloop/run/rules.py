"""What `prompts/models.yaml` says about a model, read once per process.

One home for the per-model rules (edit format, tools, the GIVE UP line, request parameters, the
temperature after a repeated reply), so the loop, the prompt builder and the session agree.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

from agentloop.data import data_dir

DEFAULT_REPEAT_TEMPERATURE = 0.7
FLAGS = ("tools", "give_up", "fresh_retry", "undo_failed", "fresh_seed")  # the yes/no keys of a rule


@dataclass(frozen=True)
class ModelRule:
    """The first matching rule of models.yaml over its defaults."""

    edit_format: str = "search_replace"
    tools: bool = True  # offer the read-only tools when `tools: auto`
    give_up: bool = True  # offer the GIVE UP line in the prompt
    fresh_retry: bool = False  # after an unusable reply (nothing applied yet): the first prompt + why, again
    undo_failed: bool = False  # an applied reply that passed no more checks than the start is undone
    fresh_seed: bool = False  # every request carries a new random `seed` (unless the user's params set one)
    params: dict[str, Any] = field(default_factory=dict)  # request parameters (a copy is handed out)
    repeat_temperature: float = DEFAULT_REPEAT_TEMPERATURE
    first_prompt_tokens: int | None = None  # cap on the first prompt (estimated tokens); None: no cap


@functools.cache
def _table() -> dict[str, Any]:
    import yaml

    return yaml.safe_load((data_dir("prompts") / "models.yaml").read_text(encoding="utf-8")) or {}


@functools.cache
def rule_for(model: str) -> ModelRule:
    table = _table()
    edit_format = table.get("default", "search_replace")
    params = dict(table.get("params") or {})
    flags: dict[str, bool] = {}
    cap = table.get("first_prompt_tokens")
    for rule in table.get("rules", []):
        if re.search(rule["match"], model or ""):
            edit_format = rule.get("format", edit_format)
            params.update(rule.get("params") or {})
            flags = {key: bool(rule[key]) for key in FLAGS if key in rule}
            cap = rule.get("first_prompt_tokens", cap)
            break
    return ModelRule(edit_format, params=params,
                     repeat_temperature=float(table.get("repeat_temperature", DEFAULT_REPEAT_TEMPERATURE)),
                     first_prompt_tokens=int(cap) if cap else None, **flags)


def edit_format(model: str, requested: str) -> str:
    """The edit format to use: `auto` resolved through models.yaml."""
    return requested if requested != "auto" else rule_for(model).edit_format


def tools_enabled(mode: str, model: str) -> bool:
    """`auto` offers the tools unless models.yaml says the model does better without them."""
    return mode == "on" or (mode == "auto" and rule_for(model).tools)


def give_up_offered(model: str) -> bool:
    """Small models answer GIVE UP to a task they could do when offered it: models.yaml can withhold it."""
    return rule_for(model).give_up


def params(model: str | None, user_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Request parameters: models.yaml's for this model (e.g. a reply length limit that stops a small
    model rambling), under the user's `model_params`, which always win."""
    return dict(rule_for(model or "").params) | dict(user_params or {})


def fresh_retry(model: str) -> bool:
    """Whether a reply that could not be applied, before any edit was, is followed by the first prompt
    and the reason it was refused, without the reply itself (rather than by the conversation with the
    refused reply in it): a small model shown its own reply copies it."""
    return rule_for(model).fresh_retry


def undo_failed(model: str) -> bool:
    """Whether an applied reply after which no more checks pass than at the start is undone, the next
    request being the first prompt and how that reply failed: a small model rarely mends a wrong fix
    over turns; a fresh sample of the first prompt may get it right (measured: benchmarks/results/real-suite.md)."""
    return rule_for(model).undo_failed


def fresh_seed(model: str) -> bool:
    """Whether every request carries a new random `seed`: a server that draws its seeds from a fixed
    chain (llama-cpp-python, from its start) gave the same replies in every run of a task, so repeated
    runs and a batch's samples of one task were one sample."""
    return rule_for(model).fresh_seed


def first_prompt_tokens(model: str) -> int | None:
    """The cap on the first prompt's (estimated) tokens for this model, if models.yaml sets one."""
    return rule_for(model).first_prompt_tokens


def repeat_temperature(model: str) -> float:
    """The temperature (at least) of the request after a reply that repeated an earlier one."""
    return rule_for(model).repeat_temperature
