"""Keep the repository's git configuration as it was while checks run.

Code under test (the model's code) can write `.git/config` when the sandbox is off: a planted
`core.fsmonitor`, filter or hook setting would then run inside agentloop's own git commands, or the
user's next `git status`. Around every check the config files are read before and compared after;
a change is undone byte for byte and reported, so that the round's verdict does not count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agentloop.files import atomic_write
from agentloop.workspace.repo import Workspace, common_dir

# Files under a git directory that change what git runs or how it reads files.
GUARDED = ("config", "config.worktree", "info/attributes")


@dataclass
class GitConfigGuard:
    paths: list[Path]
    saved: dict[Path, bytes | None] = field(default_factory=dict)

    @classmethod
    def for_workspace(cls, workspace: Workspace) -> GitConfigGuard:
        dirs = [workspace.git_dir.resolve(), common_dir(workspace.root)]
        paths = [d / name for d in dict.fromkeys(dirs) for name in GUARDED]
        guard = cls(paths)
        guard.remember()
        return guard

    def remember(self) -> None:
        """Take the files as they are now as the state to keep."""
        self.saved = {path: _read(path) for path in self.paths}

    def restore_changed(self) -> list[str]:
        """Put back every guarded file that changed since `remember`; return their names."""
        changed = []
        for path, before in self.saved.items():
            if _read(path) == before:
                continue
            where = "" if path.parent.name == ".git" else f"{path.parent.name}/"
            changed.append(f".git/{where}{path.name}")
            if before is None:
                path.unlink(missing_ok=True)
            else:
                atomic_write(path, before)
        return changed


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        return b"<directory>"
