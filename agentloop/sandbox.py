"""Run checks under bubblewrap: model-written code gets a read-only system, no network, no git.

Inside: `/` read-only, a fresh `/tmp`, the workspace writable, but its `.git` (and, for a git
worktree, the git directories it points to), the runs directory and the protected paths read-only;
credential stores and shell start-up files under $HOME (SECRET_HOME_PATHS) hidden;
network, PID and IPC namespaces unshared; the sandbox dies with agentloop. `auto` uses bubblewrap
where it works and says in one line when it cannot; `bwrap` insists (a usage error otherwise).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from agentloop.errors import UsageError

MODES = ("off", "auto", "bwrap")
# Credential stores and shell start-up files (where keys are often exported) under $HOME, hidden
# inside the sandbox: a directory behind an empty tmpfs, a file behind /dev/null.
SECRET_HOME_PATHS = (
    ".aws", ".azure", ".config/gcloud", ".config/gh", ".docker", ".gnupg", ".kube", ".ssh",
    ".config/anthropic", ".config/openai", ".netrc", ".git-credentials", ".pypirc", ".npmrc", ".env",
    ".bashrc", ".bash_profile", ".bash_history", ".profile", ".zshrc", ".zprofile", ".zsh_history",
    ".zshenv", ".config/fish/config.fish", ".python_history",
)
_NAMESPACES = ("--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent",
               "--new-session")


@cache
def probe() -> str | None:
    """None if bubblewrap can run a sandbox here, else why not (once per process)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    try:
        proc = subprocess.run([bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", *_NAMESPACES,
                               "true"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap failed to start: {exc}"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return f"bwrap cannot create a sandbox here: {last}"
    return None


@dataclass(frozen=True)
class Sandbox:
    """How checks are wrapped; `note` is the one line that tells the user what was chosen."""

    mode: str  # "off" or "bwrap", as resolved
    root: Path | None = None
    readonly: tuple[Path, ...] = ()  # always read-only inside: .git, git dirs, runs directory
    hidden: tuple[Path, ...] = ()  # credential files and directories made empty inside
    note: str = ""

    def wrapper(self, protected: Iterable[Path] = (), writable: Iterable[Path] = ()) -> list[str]:
        """The argv prefix for `/bin/sh -c CMD`; `protected` paths are also made read-only, `writable`
        folders outside the workspace (a graded check's report folder) are bound writable."""
        if self.mode != "bwrap" or self.root is None:
            return []
        root = str(self.root)
        args = [shutil.which("bwrap") or "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                "--tmpfs", "/tmp"]
        for top in _tools_under_tmp(os.environ):  # the private /tmp must not hide the checks' own tools
            args += ["--ro-bind", top, top]
        args += ["--bind", root, root]  # after /tmp: the workspace may live under it
        for path in writable:
            args += ["--bind", str(path), str(path)]
        for path in (*self.readonly, *protected):
            if path.exists() or path.is_symlink():
                real = str(path.resolve()) if path.is_symlink() else str(path)
                args += ["--ro-bind", real, real]
        for path in self.hidden:
            args += ["--tmpfs", str(path)] if path.is_dir() else ["--ro-bind", "/dev/null", str(path)]
        return [*args, *_NAMESPACES, "--chdir", root, "--"]


def _secret_home_paths(root: Path) -> tuple[Path, ...]:
    """The SECRET_HOME_PATHS that exist (symlinks resolved), except any holding the workspace."""
    found = []
    home = Path.home()
    for rel in SECRET_HOME_PATHS:
        path = home / rel
        if not (path.exists() and (path.is_dir() or path.is_file())):
            continue
        path = path.resolve()
        if path == Path("/") or root.is_relative_to(path) or path in found:
            continue
        found.append(path)
    return tuple(found)


def _tools_under_tmp(environ: Mapping[str, str]) -> list[str]:
    """Folders directly under /tmp that hold the checks' interpreter or tools (PATH, VIRTUAL_ENV,
    PYTHONPATH, this Python): shown read-only inside, else a venv made under /tmp disappears."""
    entries = [*environ.get("PATH", "").split(os.pathsep), environ.get("VIRTUAL_ENV", ""),
               *environ.get("PYTHONPATH", "").split(os.pathsep), sys.prefix]
    tops: list[str] = []
    for entry in entries:
        parts = Path(entry).parts if entry and os.path.isabs(entry) else ()
        if len(parts) > 2 and parts[1] == "tmp":
            top = os.path.join("/tmp", parts[2])
            if os.path.isdir(top) and top not in tops:
                tops.append(top)
    return tops


def check_mode(mode: str) -> None:
    """Fail early, before a run starts, when bubblewrap was asked for and cannot run."""
    if mode == "bwrap":
        reason = probe()
        if reason:
            raise UsageError(f"sandbox: bwrap was asked for but {reason}; install bubblewrap, "
                             "or use --sandbox auto (falls back) or --sandbox off")


def resolve(mode: str, root: Path, git_paths: Iterable[Path] = (), runs_dir: Path | None = None) -> Sandbox:
    """The sandbox for a run in `root` under `mode` (off | auto | bwrap)."""
    if mode == "off":
        return Sandbox("off")
    check_mode(mode)
    reason = probe()
    if reason:
        return Sandbox("off", note=f"sandbox: {reason}; checks run unsandboxed (set sandbox: off to "
                                   "silence this)")
    readonly = [root / ".git", *git_paths]
    if runs_dir is not None:
        readonly.append(runs_dir)
    unique = tuple(dict.fromkeys(Path(p) for p in readonly))
    return Sandbox("bwrap", root, unique, _secret_home_paths(root),
                   note="sandbox: checks run under bubblewrap (no network; writes only inside the repository)")
