"""The user's ignored environment (.venv, node_modules, target/ ...), there for checks in a run's worktree.

A worktree holds what git tracks plus untracked files, not the ignored directories a build needs.
Copying them per run would cost gigabytes, so instead, for top-level ignored directories with known
names (or listed under `workspace:` in the config):

- dependencies (`shared`: .venv, node_modules, ...) are the user's own copy, shown read-only under
  the sandbox (a check cannot corrupt it); without the sandbox they are symlinked (nothing can be
  protected from a check there anyway);
- build outputs (`build`: target, build, ...) get one writable copy per repository under
  `.git/agentloop/env/`, seeded from the user's copy on first use and kept across runs, so an
  incremental build stays incremental and the user's copy is never written.

Links and mount points exist only while checks run (`present`), so nothing from these directories
can enter a run's snapshot or result. `--in-place` runs need none of this: the tree is the user's.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentloop.workspace.repo import git, ignored_entries
from agentloop.workspace.sandbox import Bind

SHARED_NAMES = (".venv", "venv", "node_modules", "vendor", "bower_components")
BUILD_NAMES = ("target", "build", "_build", ".build", ".gradle")
SECRET_PATTERNS = (".env", ".env.*")  # ignored files hidden from checks in --in-place runs
ENV_STATE = "env"  # under .git/agentloop: the per-repository build copies


@dataclass(frozen=True)
class EnvDir:
    name: str  # a top-level directory of the user's tree
    source: Path  # the user's copy
    build: bool  # written by builds: a per-repository writable copy, not the user's


def detect(user_root: Path, settings: Mapping[str, Any]) -> list[EnvDir]:
    """Top-level directories the user's checkout has, git does not track, and checks may need."""
    wanted: dict[str, bool] = {}
    if settings.get("detect", True):
        wanted.update({name: False for name in SHARED_NAMES})
        wanted.update({name: True for name in BUILD_NAMES})
        with os.scandir(user_root) as entries:  # any virtualenv, whatever its name
            for entry in entries:
                if entry.is_dir(follow_symlinks=False) and os.path.exists(os.path.join(entry.path, "pyvenv.cfg")):
                    wanted[entry.name] = False
    wanted.update({name: False for name in settings.get("shared", ())})
    wanted.update({name: True for name in settings.get("build", ())})
    present = [name for name in wanted
               if (user_root / name).is_dir() and not (user_root / name).is_symlink() and name != ".git"]
    if not present:
        return []
    tracked = git(["ls-files", "-z", "--", *present], user_root).split("\0")
    holding_tracked = {path.split("/", 1)[0] for path in tracked if path}
    ignored = {line.strip().rstrip("/") for line in git(["check-ignore", "--", *[f"{name}/" for name in present]],
                                                         user_root, check=False).splitlines()}
    return [EnvDir(name, user_root / name, wanted[name]) for name in present
            if name not in holding_tracked and (name in ignored or not settings.get("detect", True)
                                                or name in settings.get("shared", ())
                                                or name in settings.get("build", ()))]


def build_copy(state_dir: Path, env: EnvDir) -> Path:
    """The repository's writable copy of a build directory, made from the user's on first use."""
    import fcntl

    home = state_dir / ENV_STATE
    home.mkdir(parents=True, exist_ok=True)
    copy = home / env.name
    with open(home / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not copy.is_dir():
            partial = home / f".{env.name}.{os.getpid()}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            # --reflink=auto: instant on btrfs/xfs, a plain copy elsewhere (once per repository).
            proc = subprocess.run(["cp", "-a", "--reflink=auto", str(env.source), str(partial)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                shutil.rmtree(partial, ignore_errors=True)
                partial.mkdir()  # start empty rather than fail the run: the build fills it
            os.replace(partial, copy)
    return copy


@dataclass
class Environment:
    """The environment directories of one run and how checks see them."""

    user_root: Path
    workspace: Path
    dirs: list[EnvDir]
    state_dir: Path
    sandboxed: bool

    @property
    def needed(self) -> bool:
        return bool(self.dirs) and self.user_root.resolve() != self.workspace.resolve()

    def source_of(self, env: EnvDir) -> Path:
        return build_copy(self.state_dir, env) if env.build else env.source

    def binds(self) -> list[Bind]:
        """Under the sandbox: each directory mounted into the workspace (dependencies also at their
        real path, where a virtualenv's scripts point)."""
        if not self.needed:
            return []
        binds = []
        for env in self.dirs:
            binds.append(Bind(self.source_of(env), self.workspace / env.name, writable=env.build))
            if not env.build:
                binds.append(Bind(env.source, env.source))
        return binds

    @contextlib.contextmanager
    def present(self) -> Iterator[None]:
        """While checks run: symlinks (no sandbox) or mount points (sandbox); removed afterwards."""
        if not self.needed:
            yield
            return
        made: list[Path] = []
        try:
            for env in self.dirs:
                target = self.workspace / env.name
                if os.path.lexists(target):
                    continue
                if self.sandboxed:
                    target.mkdir()  # the mount point bwrap would otherwise create
                else:
                    target.symlink_to(self.source_of(env), target_is_directory=True)
                made.append(target)
            yield
        finally:
            for target in made:
                with contextlib.suppress(OSError):
                    target.unlink() if target.is_symlink() else target.rmdir()


def secret_files(user_root: Path, patterns: tuple[str, ...] | list[str],
                 ignored: Callable[[], list[str]] | None = None) -> list[Path]:
    """Ignored files of the user's tree whose names match `patterns` (default `.env`, `.env.*`).
    `ignored`: gives `ignored_entries(user_root)` as it is now, when the caller shares that listing."""
    if not patterns:
        return []
    found = []
    for rel in (ignored or (lambda: ignored_entries(user_root)))():
        name = rel.rstrip("/").rsplit("/", 1)[-1]
        if any(fnmatch.fnmatch(name, p) for p in patterns):
            found.append(user_root / rel.rstrip("/"))
    return found
