"""Settings for a run: defaults < `.agentloop.yaml` < environment < command-line flags.

Everything is validated here, once, so the rest of agentloop can trust its input. A bad value
raises ConfigError with one line that names the key, what is wrong, and how to fix it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from agentloop.errors import ConfigError

CONFIG_FILE = ".agentloop.yaml"
EDIT_FORMATS = ("auto", "search_replace", "udiff", "whole", "apply_patch", "function")
TOOLS_MODES = ("auto", "on", "off")
SANDBOX_MODES = ("off", "auto", "bwrap")  # see agentloop/workspace/sandbox.py
CHECK_KINDS = ("auto", "pytest", "command")  # see agentloop/workspace/grading.py


@dataclass(frozen=True)
class Check:
    """A command whose exit code judges the code.

    feedback: its output is shown to the model each turn (RLEF "public tests").
    accept:   it must pass for the run to succeed (hidden from the model when feedback is false).
    """

    run: str
    name: str = ""
    timeout: float | None = None  # seconds; None means Config.check_timeout
    feedback: bool = True
    accept: bool = True
    kind: str = "auto"  # auto: pytest graded by its report when the command runs pytest; pytest; command

    @property
    def label(self) -> str:
        return self.name or self.run


@dataclass(frozen=True)
class Budget:
    """Limits on a run; whichever is reached first ends it cleanly."""

    max_turns: int = 6
    max_model_calls: int = 30
    max_tokens: int = 400_000  # prompt + completion, summed over all calls
    max_cost: float = 2.0  # USD
    time_limit: float = 1800  # seconds of wall time


@dataclass(frozen=True)
class Reward:
    """The episode reward written to the trajectory footer (RLEF defaults, Gehring et al. 2024)."""

    accepted: float = 1.0
    failed: float = -1.0  # any outcome other than accepted
    unusable_turn: float = -0.2  # added once per turn whose reply held no edit that applied

    def score(self, accepted: bool, unusable_turns: int) -> float:
        return round((self.accepted if accepted else self.failed) + self.unusable_turn * unusable_turns, 6)


@dataclass(frozen=True)
class HookSettings:
    """The `hook:` section: checks and budget limits that apply only to `agentloop hook`.

    Unset fields (empty checks, None limits) fall back to the repository's checks and the hook's budget.
    """

    checks: tuple[Check, ...] = ()
    max_turns: int | None = None
    max_model_calls: int | None = None
    max_tokens: int | None = None
    max_cost: float | None = None
    time_limit: float | None = None

    def budget(self) -> dict[str, float]:
        """The limits this section sets, by budget key."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "checks" and getattr(self, f.name) is not None}

    def to_dict(self) -> dict[str, Any]:
        """What the section sets, as plain data (nothing for what it leaves unset)."""
        return ({"checks": [vars(c) | {} for c in self.checks]} if self.checks else {}) | self.budget()


@dataclass(frozen=True)
class Config:
    model: str | None = None
    api_base: str | None = None
    edit_format: str = "auto"
    tools: str = "auto"
    checks: tuple[Check, ...] = ()
    files: tuple[str, ...] = ()
    protect: tuple[str, ...] = ()  # added to the default protected harness (workspace.guard.default_protected)
    allow_test_edits: bool = False  # lift the default protection of tests and harness files
    pass_env: tuple[str, ...] = ()
    sandbox: str = "auto"  # bubblewrap where it works (model-written code runs in the checks)
    budget: Budget = field(default_factory=Budget)
    reward: Reward = field(default_factory=Reward)
    check_timeout: float = 300
    output_cap: int = 10_000  # characters of check output shown per check (head + tail)
    max_format_errors: int = 3  # unusable replies in a row before giving up
    max_tool_rounds: int = 8  # tool calls answered within one turn before the model must edit
    # Request parameters; per-model defaults (max_tokens, temperature) come from prompts/models.yaml, these
    # win over them.
    model_params: dict[str, Any] = field(default_factory=dict)
    retries: int = 4  # extra attempts on transient provider errors
    retry_max_wait: float = 30.0
    request_timeout: float = 600.0
    runs_dir: str = ".agentloop/runs"
    in_place: bool = False  # edit the working tree itself rather than an isolated worktree
    # Held-out files (SRC outside the repository, DEST inside it) laid in only while hidden checks run.
    accept_files: tuple[tuple[str, str], ...] = ()
    # The user's ignored environment for checks (agentloop/workspace/environment.py): detect, shared, build, hide.
    workspace: dict[str, Any] = field(default_factory=dict)
    keep_runs: int = 20  # `agentloop runs --prune` keeps this many newest runs (and their branches)
    include_untracked: bool = False  # show the model files git neither tracks nor has staged
    hook: HookSettings = field(default_factory=HookSettings)  # the pre-commit hook's own checks and budget
    source: str = "defaults"  # where the file part came from, for messages

    @property
    def feedback_checks(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.feedback)

    @property
    def acceptance_checks(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.accept)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the trajectory header (secrets are masked by the trajectory writer)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "checks":
                value = [vars(c) | {} for c in value]
            elif f.name == "hook":
                value = value.to_dict()
            elif f.name in ("budget", "reward"):
                value = vars(value) | {}
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


# ---------------------------------------------------------------------------------------------
# Validation helpers


def _fail(where: str, key: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"{where}: '{key}' {problem}; {fix}")


def _as_str_list(where: str, key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)  # a tuple comes from a repeatable command-line flag
    raise _fail(where, key, "must be a list of strings", f"write e.g. {key}: [\"a\", \"b\"]")


def _as_number(where: str, key: str, value: Any, *, integer: bool = False, minimum: float = 0) -> Any:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        try:
            value = int(value) if integer else float(value)
        except (TypeError, ValueError):
            word = "a whole number" if integer else "a number"
            raise _fail(where, key, f"must be {word}, not {value!r}", f"set {key} to {word}") from None
    if value < minimum:
        raise _fail(where, key, f"must be at least {minimum}, not {value}", f"raise {key}")
    return value


def _parse_check(where: str, index: int, item: Any, defaults: dict[str, Any] | None = None) -> Check:
    key = f"checks[{index}]"
    if isinstance(item, str):
        item = {"run": item}
    if not isinstance(item, dict):
        raise _fail(where, key, "must be a command string or a mapping with 'run'", "see README")
    item = {**(defaults or {}), **item}
    unknown = set(item) - {"run", "name", "timeout", "feedback", "accept", "kind"}
    if unknown:
        raise _fail(where, key, f"has unknown field(s) {sorted(unknown)}",
                    "allowed: run, name, timeout, feedback, accept, kind")
    if item.get("kind", "auto") not in CHECK_KINDS:
        raise _fail(where, f"{key}.kind", f"must be one of {', '.join(CHECK_KINDS)}, not {item.get('kind')!r}",
                    "kind: pytest grades by per-test outcomes, kind: command by the exit code alone")
    run = item.get("run")
    if not isinstance(run, str) or not run.strip():
        raise _fail(where, f"{key}.run", "must be a non-empty command", "e.g. run: python -m pytest -q")
    timeout = item.get("timeout")
    if timeout is not None:
        timeout = _as_number(where, f"{key}.timeout", timeout, minimum=0.1)
    for flag in ("feedback", "accept"):
        if not isinstance(item.get(flag, True), bool):
            raise _fail(where, f"{key}.{flag}", "must be true or false", f"write {flag}: true")
    check = Check(run=run, name=str(item.get("name") or ""), timeout=timeout,
                  feedback=item.get("feedback", True), accept=item.get("accept", True),
                  kind=item.get("kind", "auto"))
    if not check.feedback and not check.accept:
        raise _fail(where, key, "is neither shown to the model nor required", "set feedback or accept to true")
    return check


_BUDGET_KEYS = {f.name: f for f in fields(Budget)}


def _parse_budget(where: str, raw: Any, base: Budget) -> Budget:
    if not isinstance(raw, dict):
        raise _fail(where, "budget", "must be a mapping", "e.g. budget: {max_turns: 6}")
    changes = {}
    for key, value in raw.items():
        if key not in _BUDGET_KEYS:
            raise _fail(where, f"budget.{key}", "is not a budget limit", f"use one of {sorted(_BUDGET_KEYS)}")
        integer = _BUDGET_KEYS[key].type in ("int", int)
        changes[key] = _as_number(where, f"budget.{key}", value, integer=integer, minimum=1 if integer else 0)
    return replace(base, **changes)


def _parse_reward(where: str, raw: Any, base: Reward) -> Reward:
    if not isinstance(raw, dict):
        raise _fail(where, "reward", "must be a mapping", "e.g. reward: {accepted: 1, failed: -1, unusable_turn: -0.2}")
    changes = {}
    for key, value in raw.items():
        if key not in ("accepted", "failed", "unusable_turn"):
            raise _fail(where, f"reward.{key}", "is not a reward weight", "use accepted, failed or unusable_turn")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(where, f"reward.{key}", f"must be a number, not {value!r}", f"e.g. reward: {{{key}: -1}}")
        changes[key] = float(value)
    return replace(base, **changes)


HOOK_KEYS = ("checks", *_BUDGET_KEYS)


def _parse_hook(where: str, raw: Any, base: HookSettings) -> HookSettings:
    """The `hook:` section over `base`: checks and budget limits that apply only to `agentloop hook`."""
    if not isinstance(raw, dict):
        raise _fail(where, "hook", "must be a mapping", "e.g. hook: {max_turns: 3, checks: [\"ruff check .\"]}")
    hook: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in HOOK_KEYS:
            raise _fail(where, f"hook.{key}", "is not a hook setting", f"use one of {', '.join(HOOK_KEYS)}")
        if key == "checks":
            if not isinstance(value, list):
                raise _fail(where, "hook.checks", "must be a list", "e.g. checks: [\"ruff check {files}\"]")
            hook[key] = tuple(_parse_check(where, i, item) for i, item in enumerate(value))
        else:
            integer = _BUDGET_KEYS[key].type in ("int", int)
            hook[key] = _as_number(where, f"hook.{key}", value, integer=integer, minimum=1 if integer else 0)
    return replace(base, **hook)


WORKSPACE_KEYS = ("detect", "shared", "build", "hide")


def _parse_workspace(where: str, raw: Any) -> dict[str, Any]:
    """The `workspace:` section: which ignored directories checks get, which secrets they never see."""
    if not isinstance(raw, dict):
        raise _fail(where, "workspace", "must be a mapping", "e.g. workspace: {shared: [.venv], build: [target]}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in WORKSPACE_KEYS:
            raise _fail(where, f"workspace.{key}", "is not a workspace setting",
                        f"use one of {', '.join(WORKSPACE_KEYS)}")
        if key == "detect":
            if not isinstance(value, bool):
                raise _fail(where, "workspace.detect", "must be true or false", "write detect: false")
            out[key] = value
            continue
        names = _as_str_list(where, f"workspace.{key}", value or [])
        if key != "hide" and any("/" in n.strip("/") or n in ("", ".", "..", ".git") for n in names):
            raise _fail(where, f"workspace.{key}", "must list top-level directory names",
                        f"e.g. {key}: [node_modules]")
        out[key] = tuple(n.strip("/") if key != "hide" else n for n in names)
    return out


def _parse_accept_files(where: str, raw: Any) -> tuple[tuple[str, str], ...]:
    """`accept_files`: a mapping SRC: DEST, or a list of "SRC[:DEST]" strings or {src, dest} mappings."""
    from agentloop.errors import UsageError
    from agentloop.workspace.held_out import parse_spec

    items: list[Any] = list(raw.items()) if isinstance(raw, dict) else raw if isinstance(raw, (list, tuple)) else [raw]
    out = []
    for item in items:
        if (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], (str, type(None)))):
            src, dest = item
            out.append(parse_spec(f"{src}:{dest}" if dest else src))
            continue
        if isinstance(item, dict) and isinstance(item.get("src"), str) and set(item) <= {"src", "dest"}:
            item = f"{item['src']}:{item.get('dest') or ''}"
        if not isinstance(item, str):
            raise _fail(where, "accept_files", "must be a mapping SRC: DEST or a list of \"SRC[:DEST]\"",
                        "e.g. accept_files: [\"../held-out/test_x.py:tests/test_x.py\"]")
        try:
            out.append(parse_spec(item))
        except UsageError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return tuple(out)


# How each setting is read: a parser (where, key, value, config) -> the value to store. Sections that merge
# (hook, workspace, model_params) merge with what `config` already holds.
Parser = Callable[[str, str, Any, "Config"], Any]


def _text(where: str, key: str, value: Any, config: Config) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, key, "must be a non-empty string", f"set {key} to a string or remove it")
    return value.strip()


def _optional_text(where: str, key: str, value: Any, config: Config) -> str | None:
    return None if value is None else _text(where, key, value, config)


def _flag(where: str, key: str, value: Any, config: Config) -> bool:
    if not isinstance(value, bool):
        raise _fail(where, key, f"must be true or false, not {value!r}", f"write {key}: true")
    return value


def _choice(choices: tuple[str, ...], aliases: dict[bool, str] | None = None) -> Parser:
    def parse(where: str, key: str, value: Any, config: Config) -> str:
        value = (aliases or {}).get(value, value)
        if value not in choices:
            raise _fail(where, key, f"must be one of {', '.join(choices)}, not {value!r}", "pick one")
        return value
    return parse


def _checks(where: str, key: str, value: Any, config: Config) -> tuple[Check, ...]:
    if value is None:
        return ()  # `checks:` with its examples still commented out: none
    if not isinstance(value, list):
        raise _fail(where, key, "must be a list", "e.g. checks: [\"python -m pytest -q\"]")
    return tuple(_parse_check(where, i, item) for i, item in enumerate(value))


def _strings(where: str, key: str, value: Any, config: Config) -> tuple[str, ...]:
    return () if value is None else _as_str_list(where, key, value)  # `protect:` with nothing under it: none


def _count(minimum: int) -> Parser:
    return lambda where, key, value, config: _as_number(where, key, value, integer=True, minimum=minimum)


def _seconds(where: str, key: str, value: Any, config: Config) -> float:
    return _as_number(where, key, value, minimum=0.1)


def _model_params(where: str, key: str, value: Any, config: Config) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise _fail(where, key, "must be a mapping", "e.g. model_params: {temperature: 0}")
    return {**config.model_params, **value}


SETTINGS: dict[str, Parser] = {
    "model": _optional_text,
    "api_base": _optional_text,
    "runs_dir": _text,
    "in_place": _flag,
    "include_untracked": _flag,
    "allow_test_edits": _flag,
    "edit_format": _choice(EDIT_FORMATS),
    "tools": _choice(TOOLS_MODES, {True: "on", False: "off"}),
    "sandbox": _choice(SANDBOX_MODES, {False: "off", True: "bwrap"}),
    "checks": _checks,
    "files": _strings,
    "protect": _strings,
    "pass_env": _strings,
    "budget": lambda where, key, value, config: _parse_budget(where, value, config.budget),
    "reward": lambda where, key, value, config: _parse_reward(where, value, config.reward),
    "hook": lambda where, key, value, config: _parse_hook(where, value, config.hook),
    "accept_files": lambda where, key, value, config: _parse_accept_files(where, value),
    "workspace": lambda where, key, value, config: {**config.workspace, **_parse_workspace(where, value)},
    "model_params": _model_params,
    "output_cap": _count(1),
    "max_format_errors": _count(1),
    "max_tool_rounds": _count(1),
    "retries": _count(0),
    "keep_runs": _count(1),
    "check_timeout": _seconds,
    "retry_max_wait": _seconds,
    "request_timeout": _seconds,
}


def apply_mapping(config: Config, raw: dict[str, Any], where: str) -> Config:
    """Overlay `raw` (from a YAML file or flags) onto `config`, validating every key."""
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        parse = SETTINGS.get(key)
        if parse is None:
            raise _fail(where, key, "is not a setting agentloop knows",
                        f"known settings: {', '.join(sorted(SETTINGS))}")
        changes[key] = parse(where, key, value, config)
    return replace(config, **changes)


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a YAML config file into a mapping, with one-line errors."""
    import yaml  # only needed when a file exists

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror}); check the path") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: {problem}{at}; fix the YAML syntax") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping of settings, not {type(raw).__name__}; see README")
    return raw


ENV_VARS = {
    "AGENTLOOP_MODEL": "model",
    "AGENTLOOP_API_BASE": "api_base",
    "AGENTLOOP_EDIT_FORMAT": "edit_format",
    "AGENTLOOP_RUNS_DIR": "runs_dir",
    "AGENTLOOP_SANDBOX": "sandbox",
}


def load_config(
    repo: Path,
    *,
    config_path: Path | None = None,
    flags: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """Build the Config for a run in `repo` from every layer, most specific last."""
    config = Config()
    path = config_path or repo / CONFIG_FILE
    if config_path is not None and not path.is_file():
        raise ConfigError(f"--config {path}: no such file; check the path")
    if path.is_file():
        config = apply_mapping(config, read_config_file(path), str(path))
        config = replace(config, source=str(path))
    environ = os.environ if environ is None else environ
    from_env = {key: environ[var] for var, key in ENV_VARS.items() if environ.get(var)}
    config = apply_mapping(config, from_env, "environment")
    flags = {k: v for k, v in (flags or {}).items() if v is not None and v != ()}
    budget = {k: flags.pop(k) for k in list(flags) if k in _BUDGET_KEYS}
    if budget:
        flags["budget"] = budget
    return apply_mapping(config, flags, "command line")
