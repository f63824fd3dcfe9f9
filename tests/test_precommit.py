"""The published hook under the real `pre-commit` tool: pass path, repair path, no-model path.

pre-commit installs agentloop (and litellm) into its own virtualenv, which takes minutes, so the
`pre-commit run` / `git commit` tests share one PRE_COMMIT_HOME, keyed by the content of the
package: it installs once per change to the code. `try-repo` always installs afresh (it uses a
throwaway store), so one test uses it, for the repair path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import BUGGY_CALC, CALC_TEST, ROOT, git, make_repo
from fake_llm import FakeLLM

from agentloop.commands.hook import MODEL_LINE

pytestmark = pytest.mark.slow

PRE_COMMIT = Path(sys.executable).parent / "pre-commit"
INSTALL_TIMEOUT = 1500
# What pre-commit installs. README.md is replaced by a stub so that editing docs does not cost a reinstall.
PACKAGE = ("pyproject.toml", ".pre-commit-hooks.yaml", "agentloop/", "prompts/", "tools/")
PYTEST = "python -m pytest -q -p no:cacheprovider"  # `python` must be the user's, not the hook env's
FIX_ADD = """add() subtracts; it must add.

calc.py
<<<<<<< SEARCH
    return a - b
=======
    return a + b
>>>>>>> REPLACE
"""
WHERE = "import os, sys; print('PREFIX=' + sys.prefix); print('VENV=' + os.environ.get('VIRTUAL_ENV', ''))"


def _package_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return sorted(f for f in out.split("\0") if f.startswith(PACKAGE) and (ROOT / f).is_file())


@pytest.fixture(scope="session")
def hook_repo() -> tuple[Path, str, Path]:
    """This working tree's package (uncommitted edits included) as a git repo pre-commit installs from,
    and a PRE_COMMIT_HOME where its hook environment is already installed."""
    files = _package_files()
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.encode() + b"\0" + (ROOT / name).read_bytes() + b"\0")
    cache = Path(tempfile.gettempdir()) / f"agentloop-precommit-{digest.hexdigest()[:16]}"
    src, home = cache / "src", cache / "home"
    if not (cache / "installed").exists():
        shutil.rmtree(cache, ignore_errors=True)
        for name in files:
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / name, src / name)
        make_repo(src, {"README.md": "agentloop, as installed by the tests\n"})
        sha = git(src, "rev-parse", "HEAD").strip()
        user = make_repo(cache / "installer", {".pre-commit-config.yaml": _config(src, sha, ["true"])})
        proc = subprocess.run([str(PRE_COMMIT), "install-hooks"], cwd=user, env=_env(home), capture_output=True,
                              text=True, timeout=INSTALL_TIMEOUT)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        (cache / "installed").write_text(sha)
    return src, (cache / "installed").read_text().strip(), home


def _config(src: Path, rev: str, args: list[str]) -> str:
    return ("repos:\n"
            f"-   repo: {src}\n"
            f"    rev: {rev}\n"
            "    hooks:\n"
            "    -   id: agentloop\n"
            f"        args: {json.dumps(args)}\n")


def _env(home: Path, **extra: str) -> dict[str, str]:
    """A user's shell with this test venv activated: its `python` has pytest, pre-commit's hook env does not."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTLOOP_", "PRE_COMMIT", "GIT_"))}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "/usr/bin:/bin")])
    env["VIRTUAL_ENV"] = sys.prefix
    env["PRE_COMMIT_HOME"] = str(home)
    env["PRE_COMMIT_COLOR"] = "never"
    return {**env, **extra}


def _run(args: list[str], repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)


def _user_repo(tmp_path: Path, src: Path, sha: str, args: list[str], calc: str = BUGGY_CALC) -> Path:
    return make_repo(tmp_path / "user", {"calc.py": calc, "test_calc.py": CALC_TEST, "notes.txt": "notes\n",
                                         ".pre-commit-config.yaml": _config(src, sha, args)})


def _same_dir(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def test_pass_path_uses_the_users_python_and_never_imports_litellm(hook_repo, tmp_path):
    src, sha, home = hook_repo
    where = tmp_path / "where.txt"
    repo = _user_repo(tmp_path, src, sha, [PYTEST, f"python -c {json.dumps(WHERE)} > {where}"],
                      calc=BUGGY_CALC.replace("a - b", "a + b"))
    # The hook process reports its imports; checks never see this variable (not on the allowlist).
    proc = _run([str(PRE_COMMIT), "run", "--all-files", "--verbose"], repo,
                _env(home, PYTHONPROFILEIMPORTTIME="1"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "agentloop" in out and "Passed" in out
    assert "agentloop.commands.hook" in out  # the import report is there ...
    assert "litellm" not in out and "agentloop.run.loop" not in out  # ... and the model side never loaded
    # Checks ran from pre-commit's hook env, yet `python` there is the user's, as in their shell.
    seen = dict(line.split("=", 1) for line in where.read_text().splitlines())
    prefix, venv = seen["PREFIX"], seen["VENV"]
    assert _same_dir(prefix, sys.prefix), prefix
    assert _same_dir(venv, sys.prefix), venv
    assert git(repo, "status", "--porcelain") == ""


def test_repair_on_git_commit_leaves_the_fix_unstaged(hook_repo, tmp_path):
    src, sha, home = hook_repo
    repo = _user_repo(tmp_path, src, sha, [PYTEST, "ls -- {files}"])
    env = _env(home)
    assert _run([str(PRE_COMMIT), "install"], repo, env).returncode == 0
    (repo / "feature.txt").write_text("new feature\n")
    git(repo, "add", "feature.txt")
    (repo / "notes.txt").write_text("notes\nunstaged work in progress\n")  # pre-commit stashes this aside
    head = git(repo, "rev-parse", "HEAD")
    with FakeLLM([{"content": FIX_ADD}]) as server:
        proc = _run(["git", "commit", "-m", "wip"], repo,
                    {**env, "AGENTLOOP_MODEL": "openai/fake", "AGENTLOOP_API_BASE": server.api_base})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert len(server.requests) == 1
    assert "files were modified by this hook" in out
    assert "fixed after 1 turn(s)" in out and "why: add() subtracts; it must add." in out
    assert "+    return a + b" in out and "NOT staged" in out
    assert git(repo, "rev-parse", "HEAD") == head  # no commit
    assert "return a + b" in (repo / "calc.py").read_text()  # the fix, in the working tree
    assert git(repo, "diff", "--cached", "--name-only") == "feature.txt\n"  # the index as the user left it
    assert (repo / "notes.txt").read_text() == "notes\nunstaged work in progress\n"  # stash restored
    assert git(repo, "stash", "list") == ""
    # The user reviews, stages the fix and commits again: now the hook passes at once.
    git(repo, "add", "calc.py")
    proc = _run(["git", "commit", "-m", "wip"], repo, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert git(repo, "show", "--name-only", "--format=", "HEAD").split() == ["calc.py", "feature.txt"]


def test_a_fix_that_conflicts_with_unstaged_work_loses_nothing(hook_repo, tmp_path):
    """pre-commit rolls the fix back to restore the user's unstaged edit; the fix stays saved as a patch."""
    src, sha, home = hook_repo
    repo = _user_repo(tmp_path, src, sha, [PYTEST])
    (repo / "feature.txt").write_text("new feature\n")
    git(repo, "add", "feature.txt")
    wip = BUGGY_CALC.replace("return a - b", "return a - b  # still thinking")
    (repo / "calc.py").write_text(wip)  # unstaged, on the very line the fix changes
    with FakeLLM([{"content": FIX_ADD}]) as server:
        proc = _run([str(PRE_COMMIT), "run"], repo,
                    _env(home, AGENTLOOP_MODEL="openai/fake", AGENTLOOP_API_BASE=server.api_base))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Rolling back fixes" in out
    assert (repo / "calc.py").read_text() == wip  # the user's edit, intact
    assert git(repo, "diff", "--cached", "--name-only") == "feature.txt\n"
    saved = next((repo / ".agentloop" / "runs").glob("*/final.patch")).read_text()
    assert "+    return a + b" in saved and "final.patch" in out


def test_no_model_prints_the_failure_and_the_line_that_sets_one(hook_repo, tmp_path):
    src, sha, home = hook_repo
    repo = _user_repo(tmp_path, src, sha, [PYTEST])
    proc = _run([str(PRE_COMMIT), "run", "--all-files"], repo, _env(home))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "assert -1 == 5" in out and MODEL_LINE in out
    assert git(repo, "status", "--porcelain") == ""


def test_try_repo_repairs_with_checks_from_agentloop_yaml(hook_repo, tmp_path):
    """`pre-commit try-repo` as a user would first try the hook: checks come from .agentloop.yaml."""
    src, sha, home = hook_repo
    repo = make_repo(tmp_path / "user", {"calc.py": BUGGY_CALC, "test_calc.py": CALC_TEST,
                                         ".agentloop.yaml": f"checks: [{json.dumps(PYTEST)}]\n"})
    with FakeLLM([{"content": FIX_ADD}]) as server:
        proc = _run([str(PRE_COMMIT), "try-repo", str(src), "agentloop", "--ref", sha, "--all-files"], repo,
                    _env(tmp_path / "throwaway-home", AGENTLOOP_MODEL="openai/fake",
                         AGENTLOOP_API_BASE=server.api_base))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "files were modified by this hook" in out and "fixed after 1 turn(s)" in out
    assert "return a + b" in (repo / "calc.py").read_text()
    assert git(repo, "diff", "--cached") == ""


def test_the_published_manifest_is_valid_and_says_what_the_issue_asks():
    import yaml

    proc = subprocess.run([str(PRE_COMMIT), "validate-manifest", str(ROOT / ".pre-commit-hooks.yaml")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "agentloop" and hook["language"] == "python" and hook["entry"] == "agentloop hook"
    assert hook["pass_filenames"] is False and hook["require_serial"] is True
    assert set(hook["stages"]) == {"pre-commit", "pre-push", "manual"}
