"""How agentloop runs git itself, so that nothing planted in a repository runs through it.

Every git command of agentloop's gets SAFE_CONFIG (no fsmonitor hook, no hooks, no attributes file,
no line-ending conversion, no automatic gc, patches in git's default form) and `git_env()` (no
secret, no system config). In-tree attributes (filters, textconv, `-diff`) are kept out by never
letting git convert what agentloop stores (hash-object --no-filters, cat-file blob) and by diffing
with --no-ext-diff --no-textconv, text decided by content (see `workspace.Workspace.diff`); diffs go
through plumbing (`diff-tree`), which ignores the user's diff settings. Cheap to import (the
pre-commit pass path).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path

SAFE_CONFIG = ("-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null", "-c", "core.attributesFile=/dev/null",
               "-c", "core.autocrlf=false", "-c", "core.safecrlf=false", "-c", "gc.auto=0",
               "-c", "core.untrackedCache=false", "-c", "core.splitIndex=false", "-c", "diff.suppressBlankEmpty=false")


def git_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of agentloop's own git: no secret (provider keys, tokens), no system config."""
    env = {k: v for k, v in (base if base is not None else os.environ).items() if not _secret_name(k)}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_ATTR_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0", GIT_OPTIONAL_LOCKS="0")
    return env


@functools.lru_cache(maxsize=1024)
def _secret_name(name: str) -> bool:
    """Asked for every variable of every git call (some 50 a turn): the answer for a name never changes."""
    from agentloop.workspace.checks import SECRET_NAME

    return bool(SECRET_NAME.search(name))


def git_argv(*args: str) -> list[str]:
    return ["git", *SAFE_CONFIG, *args]


def toplevel(start: Path | None = None) -> Path | None:
    """The top folder of the git repository around `start` (default: the current directory), resolved;
    None outside a repository."""
    import subprocess

    try:
        proc = subprocess.run(git_argv("rev-parse", "--show-toplevel"), cwd=start, env=git_env(),
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(proc.stdout.strip()).resolve() if proc.returncode == 0 else None
