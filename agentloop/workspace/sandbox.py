"""Run checks under bubblewrap: model-written code gets a read-only system, no network, no git.

Inside: `/` read-only, a fresh `/tmp`, the run's workspace writable (build outputs, caches,
bytecode), but its `.git` (and the git directories a worktree points to) and the protected paths
read-only; hidden (empty): the user's own tree when the run works in a worktree, the runs directory
(check logs of hidden checks), run records under `.git/agentloop`, held-out files outside an
acceptance check, credential stores and shell start-up files under $HOME (SECRET_HOME_PATHS);
the user's ignored environment (.venv, node_modules, target/ ...) shown as agentloop.workspace.environment
says; a worktree run's workspace shown at one stable path (`mount_at`) for path-keyed build
caches; network, PID and IPC namespaces unshared; the sandbox dies with agentloop. `auto` uses
bubblewrap where it works and says in one line when it cannot; `bwrap` insists (a usage error otherwise).
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

STABLE_NAME = "checkout"  # inside the sandbox a worktree run's workspace is <git dir>/agentloop/checkout
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
class Bind:
    """A host path shown at `dest` inside the sandbox (read-only unless `writable`)."""

    source: Path
    dest: Path
    writable: bool = False


@dataclass(frozen=True)
class Sandbox:
    """How checks are wrapped; `note` is the one line that tells the user what was chosen.

    Mounts are applied shallowest first, so a deeper one always wins: the user's tree hidden, its
    `.git` shown read-only, `.git/agentloop` hidden, the run's workspace (a worktree under it)
    writable, the workspace's own `.git` and protected paths read-only again, secrets hidden.
    """

    mode: str  # "off" or "bwrap", as resolved
    root: Path | None = None
    readonly: tuple[Path, ...] = ()  # always read-only inside: .git, git dirs
    hidden: tuple[Path, ...] = ()  # made empty inside: credentials, runs directory, run records, the user's tree
    binds: tuple[Bind, ...] = ()  # the user's ignored environment (.venv, node_modules, target/ ...)
    note: str = ""
    # Where the workspace appears inside: the same path for every run of a repository, so that
    # compilers caching by absolute path (rustc's incremental cache, cargo) stay incremental.
    mount_at: Path | None = None

    @property
    def confines(self) -> bool:
        """Whether checks run inside it (bubblewrap); without it, `wrapper` is empty."""
        return self.mode == "bwrap" and self.root is not None

    def inside(self, path: str | Path) -> str:
        """Where a host path under the workspace appears inside the sandbox."""
        path = Path(path)
        if self.mount_at is not None and self.root is not None and path.is_relative_to(self.root):
            return str(self.mount_at / path.relative_to(self.root))
        return str(path)

    def wrapper(self, protected: Iterable[Path] = (), binds: Iterable[Bind] = (),
                hide: Iterable[Path] = (), writable: Iterable[Path] = ()) -> list[str]:
        """The argv prefix for `/bin/sh -c CMD`; `protected` paths are also made read-only, `binds`
        added (held-out files of an acceptance check), `hide` hidden (them, outside it) and `writable`
        folders outside the workspace (a graded check's report folder) bound writable."""
        if not self.confines:
            return []
        args = [shutil.which("bwrap") or "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                "--tmpfs", "/tmp"]
        mounts: list[tuple[str, str, str]] = []  # (dest, kind, source); kind: tmpfs | null | ro | rw
        for top in _tools_under_tmp(os.environ):  # the private /tmp must not hide the checks' own tools
            mounts.append((top, "ro", top))
        for path in self.hidden:
            mounts.append(self._hide(path))
        for bind in (*self.binds, *binds):
            if os.path.lexists(bind.source):
                mounts.append((self.inside(bind.dest), "rw" if bind.writable else "ro", str(bind.source)))
        mounts.append((self.inside(self.root), "rw", str(self.root)))
        for path in writable:
            mounts.append((str(path), "rw", str(path)))
        for path in (*self.readonly, *protected):
            if path.exists() or path.is_symlink():
                real = str(path.resolve()) if path.is_symlink() else str(path)
                mounts.append((self.inside(real), "ro", real))
        for path in hide:
            if os.path.lexists(path):
                mounts.append(self._hide(path))
        # Deeper mounts after shallower ones (a stable sort keeps the order above for equal depth).
        for dest, kind, source in sorted(mounts, key=lambda m: len(Path(m[0]).parts)):
            if kind == "tmpfs":
                args += ["--tmpfs", dest]
            elif kind == "null":
                args += ["--ro-bind", "/dev/null", dest]
            else:
                args += ["--bind" if kind == "rw" else "--ro-bind", source, dest]
        return [*args, *_NAMESPACES, "--chdir", self.inside(self.root), "--"]

    def _hide(self, path: Path) -> tuple[str, str, str]:
        """A directory behind an empty tmpfs, anything else behind /dev/null."""
        return (self.inside(path), "tmpfs" if path.is_dir() else "null", "")


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


def resolve(mode: str, root: Path, git_paths: Iterable[Path] = (), runs_dir: Path | None = None, *,
            user_root: Path | None = None, state_dir: Path | None = None, binds: Iterable[Bind] = (),
            hidden: Iterable[Path] = ()) -> Sandbox:
    """The sandbox for a run whose workspace is `root`, under `mode` (off | auto | bwrap).

    `user_root`: the user's own tree, hidden when the run works elsewhere (a worktree); `state_dir`
    (run records, worktrees) and `runs_dir` (check logs, trajectories) are hidden too; `binds` show
    the user's ignored environment; `hidden` adds files to hide (ignored secrets such as `.env`)."""
    if mode == "off":
        return Sandbox("off")
    check_mode(mode)
    reason = probe()
    if reason:
        return Sandbox("off", note=f"sandbox: {reason}; checks run unsandboxed (set sandbox: off to "
                                   "silence this)")
    readonly = tuple(dict.fromkeys(Path(p) for p in (root / ".git", *git_paths)))
    hide: list[Path] = []
    # The user's tree is hidden when the run works elsewhere; not when it holds $HOME (a dotfiles
    # repository), whose tools and toolchains (~/.cargo, ~/.rustup) checks need.
    tree_hidden = (user_root is not None and user_root.resolve() != root.resolve()
                   and not Path.home().resolve().is_relative_to(user_root.resolve()))
    if tree_hidden and user_root is not None:
        hide.append(user_root)
    for path in (state_dir, runs_dir, *hidden):
        if path is not None and os.path.lexists(path):
            hide.append(Path(path))
    shown = list(binds)
    if tree_hidden and user_root is not None:  # its tools (a .venv on PATH) keep working at their real path
        shown += [Bind(Path(p), Path(p)) for p in _tools_under(user_root, root, os.environ)]
    hide += [p for p in _secret_home_paths(root) if p not in hide]
    what = "your tree, " if tree_hidden else ""
    elsewhere = user_root is not None and user_root.resolve() != root.resolve() and state_dir is not None
    return Sandbox("bwrap", root, readonly, tuple(dict.fromkeys(hide)), tuple(shown),
                   mount_at=state_dir / STABLE_NAME if elsewhere and state_dir is not None else None,
                   note="sandbox: checks run under bubblewrap: no network; they may write anywhere in the run's "
                        f"workspace except .git and protected files, nowhere else; {what}run records and "
                        "credentials hidden")


def _tools_under(tree: Path, workspace: Path, environ: Mapping[str, str]) -> list[str]:
    """Interpreter and tool folders (PATH, VIRTUAL_ENV, this Python) inside the user's tree."""
    entries = [*environ.get("PATH", "").split(os.pathsep), environ.get("VIRTUAL_ENV", ""), sys.prefix]
    found: list[str] = []
    for entry in entries:
        if not entry or not os.path.isabs(entry) or not os.path.isdir(entry):
            continue
        path = Path(entry).resolve()
        if path.is_relative_to(tree) and not path.is_relative_to(workspace) and path != tree:
            top = str(tree / path.relative_to(tree).parts[0])
            if not Path(top).is_relative_to(workspace) and top not in found and Path(top).name != ".git":
                found.append(top)
    return found
