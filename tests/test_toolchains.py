"""Real projects, real builds: for each toolchain, a repository with an injected bug that the scripted
model fixes through `agentloop fix`, under the default sandbox and with `--sandbox off`. Each asserts the
fix lands and that the user's tree then differs from before by exactly the model's change, whatever the
build wrote (bytecode, pytest cache and reports, objects, `target/`).

A leg is skipped, saying why, only where its toolchain is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_repo
from fake_llm import FakeLLM

from agentloop.cli import cli
from agentloop.workspace import sandbox

NO_BWRAP = sandbox.probe()
# Until these land, some legs cannot pass in a worktree: the coordinator removes the markers after merging.


def sr(path: str, search: str, replace: str) -> str:
    return f"{path}\n<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"


# -- the projects ------------------------------------------------------------------------------------------
def python_project(root: Path) -> tuple[Path, str, str]:
    """src layout, a .venv inside the repository (ignored), pytest writing its cache, bytecode and a report."""
    repo = make_repo(root, {
        "pyproject.toml": "[project]\nname = \"calc\"\nversion = \"0\"\n\n[tool.pytest.ini_options]\n"
                          "pythonpath = [\"src\"]\n",
        "src/calc/__init__.py": "def add(a, b):\n    return a - b\n",
        "tests/test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
        ".gitignore": ".venv/\n__pycache__/\n.pytest_cache/\nreports/\n",
    })
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", "--system-site-packages", str(repo / ".venv")], check=True)
    check = ".venv/bin/python -m pytest -q --junitxml=reports/junit.xml"
    return repo, check, sr("src/calc/__init__.py", "    return a - b\n", "    return a + b\n")


def c_project(root: Path) -> tuple[Path, str, str]:
    """Built by make: objects and the test binary written in the tree (ignored)."""
    repo = make_repo(root, {
        "calc.c": "int add(int a, int b) {\n    return a - b;\n}\n",
        "calc.h": "int add(int a, int b);\n",
        "test_calc.c": "#include <stdio.h>\n#include \"calc.h\"\nint main(void) {\n"
                       "    if (add(2, 3) != 5) { printf(\"add(2, 3) = %d, want 5\\n\", add(2, 3)); return 1; }\n"
                       "    return 0;\n}\n",
        "Makefile": "test: test_calc\n\t./test_calc\n\ntest_calc: calc.o test_calc.o\n\t$(CC) -o $@ $^\n\n"
                    "%.o: %.c calc.h\n\t$(CC) -c -o $@ $<\n",
        ".gitignore": "*.o\ntest_calc\n",
    })
    return repo, "make -s test", sr("calc.c", "    return a - b;\n", "    return a + b;\n")


def node_project(root: Path) -> tuple[Path, str, str]:
    """`npm test` with a dependency in node_modules/ (a local package made by hand, no registry)."""
    repo = make_repo(root, {
        "package.json": json.dumps({"name": "calc", "version": "1.0.0", "private": True,
                                    "scripts": {"test": "node test.js"}}, indent=2) + "\n",
        "lib.js": "const { twice } = require('tiny-helper');\nexports.add = (a, b) => a - b;\n"
                  "exports.double = (a) => twice(a);\n",
        "test.js": "const assert = require('assert');\nconst { add, double } = require('./lib');\n"
                   "assert.strictEqual(double(2), 4);\nassert.strictEqual(add(2, 3), 5);\nconsole.log('ok');\n",
        ".gitignore": "node_modules/\n",
    })
    helper = repo / "node_modules" / "tiny-helper"
    helper.mkdir(parents=True)
    (helper / "package.json").write_text('{"name": "tiny-helper", "version": "1.0.0", "main": "index.js"}\n')
    (helper / "index.js").write_text("exports.twice = (a) => a * 2;\n")
    fix = sr("lib.js", "exports.add = (a, b) => a - b;\n", "exports.add = (a, b) => a + b;\n")
    return repo, "npm test --silent", fix


def rust_project(root: Path) -> tuple[Path, str, str]:
    """`cargo test`, no external crates, `target/` written in the tree (ignored)."""
    repo = make_repo(root, {
        "Cargo.toml": "[package]\nname = \"calc\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n",
        "src/lib.rs": "pub fn add(a: i32, b: i32) -> i32 {\n    a - b\n}\n\n#[cfg(test)]\nmod tests {\n"
                      "    #[test]\n    fn adds() {\n        assert_eq!(super::add(2, 3), 5);\n    }\n}\n",
        ".gitignore": "target/\nCargo.lock\n",
    })
    return repo, "cargo test --offline -q", sr("src/lib.rs", "    a - b\n", "    a + b\n")


PROJECTS = {
    "python": (python_project, None),
    "c": (c_project, "make" if not (shutil.which("make") and shutil.which("cc")) else None),
    "node": (node_project, None if shutil.which("node") and shutil.which("npm") else "npm"),
    "rust": (rust_project, None if shutil.which("cargo") else "cargo"),
}


def legs():
    for name, (_, missing) in PROJECTS.items():
        for mode in ("default", "off"):
            marks = [pytest.mark.skip(reason=f"{missing} is not installed here")] if missing else []
            yield pytest.param(name, mode, marks=marks, id=f"{name}-{mode}")


def user_files(repo: Path) -> dict[str, bytes]:
    """The user's tree, ignored files included (not git's or agentloop's own, not symlinks)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(repo):
        rel_dir = Path(dirpath).relative_to(repo)
        dirnames[:] = [d for d in dirnames if not (rel_dir == Path(".") and d in (".git", ".agentloop"))]
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                out[(rel_dir / name).as_posix()] = path.read_bytes()
    return out


@pytest.mark.parametrize("name, mode", list(legs()))
def test_real_toolchain_fix_lands_and_only_the_models_change(tmp_path, monkeypatch, name, mode):
    make, _ = PROJECTS[name]
    repo, check, fix = make(tmp_path / name)
    before = user_files(repo)
    monkeypatch.chdir(repo)
    args = ["--sandbox", "off"] if mode == "off" else []
    with FakeLLM([{"content": f"The fix:\n\n{fix}"}]) as server:
        result = CliRunner().invoke(cli, ["fix", "-m", "openai/fake", "--api-base", server.api_base, "--json",
                                          "--check", check, "--max-turns", "2", *args], catch_exceptions=False)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.exit_code == 0 and summary["outcome"] == "accepted", result.stderr
    assert summary["turns"] == 1
    after = user_files(repo)
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    edited = fix.split("\n", 1)[0]
    assert changed == {edited}
    assert after[edited] != before[edited]
    patch = Path(summary["patch"]).read_text()
    assert patch.count("diff --git ") == 1 and f"b/{edited}" in patch
