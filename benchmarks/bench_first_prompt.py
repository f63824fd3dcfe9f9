"""First-prompt size before and after the context finder and the budget, on realistic repositories.

Builds the packages of tests/test_context.py (a 32-line module whose bug the traceback never names,
a 1,070-line module failing near line 890, a 142-line test file) plus 60 other files, runs real
pytest (the default `--tb=auto`, which quotes the failing frame's source), and prints the
estimated tokens (characters / 3.5) of the opening messages three ways:
`before` (the files the output names and their imports, each cut to its first 400 lines, the whole
output, the file list: agentloop up to this change), `after` (no cap) and `capped` (the 1,500 of
the small Qwen coders' models.yaml rule), and whether the buggy function is in the prompt.

Run:  .venv/bin/python benchmarks/bench_first_prompt.py
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_context import KEYS, _big_module, _buggy, _files, _pytest  # noqa: E402

from agentloop.run import budget, feedback, opening  # noqa: E402
from agentloop.workspace.checks import CommandResult  # noqa: E402

_PATHISH = re.compile(r"[\w./\\-]*[\w-]\.[A-Za-z0-9]{1,8}")
_IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w.]+))", re.M)


def legacy_user(root: Path, task: str, result: CommandResult, repo_files: list[str]) -> str:
    """The first user message as agentloop wrote it before: named files + imports, first 400 lines each."""
    known, found = set(repo_files), []
    for token in _PATHISH.findall(result.output):
        token = token.removeprefix(str(root) + "/").removeprefix("./")
        if token in known and token not in found and len(found) < 6:
            found.append(token)
    for rel in list(found):
        text = (root / rel).read_text()
        base = str(Path(rel).parent)
        for m in _IMPORT.finditer(text):
            module = (m.group(1) or m.group(2)).lstrip(".").replace(".", "/")
            for cand in (f"{module}.py", f"{module}/__init__.py", f"{base}/{module}.py", f"src/{module}.py"):
                if cand in known and cand not in found:
                    found.append(cand)
                    break
    files = []
    for rel in found[:12]:
        lines = (root / rel).read_text().splitlines()
        note = f"[{rel} has {len(lines)} lines; only the first 400 are shown.]" if len(lines) > 400 else ""
        files.append(feedback.ShownFile(rel, "\n".join(lines[:400]), feedback.language(rel), note))
    return feedback.render("task.j2", task=task, checks=[feedback.check_view(result)], files=files,
                           file_list="\n".join(repo_files[:300]))


def measure(name: str, root: Path, pytest_args: list[str], buggy_line: str) -> None:
    test = root / "tests" / "test_keys.py"  # imported as cachetools' tests import it: `from pkg import keys`
    test.write_text(test.read_text().replace("import shop.keys\n", "").replace("shop.keys.hashkey", "keys.hashkey"))
    for n in range(60):  # a realistic file list
        (root / "src" / "shop" / f"module_{n:02}.py").write_text(f"VALUE = {n}\n")
    output = _pytest(root, *pytest_args)
    result = CommandResult(command="python -m pytest", exit_code=1, output=output, duration_s=1.0)
    repo_files = _files(root)
    task = "Make the checks pass."

    def system(path: str) -> str:
        return feedback.render("system.j2", tools=False, edit_format="whole", give_up=False,
                               **feedback.example_values(path, root))

    before = system("") + legacy_user(root, task, result, repo_files)
    row = [name, str(budget.estimate_tokens(before)), "yes" if buggy_line in before else "no"]
    for cap in (None, 1500):
        first = opening.build(root, task, [result], repo_files, [], system, cap)
        row += [str(first.estimated_tokens), "yes" if buggy_line in first.user else "no"]
    print(f"{row[0]:<34} {row[1]:>7} {row[2]:>5} {row[3]:>7} {row[4]:>5} {row[5]:>7} {row[6]:>5}")


def main() -> int:
    print(f"{'case':<34} {'before':>7} {'bug?':>5} {'after':>7} {'bug?':>5} {'capped':>7} {'bug?':>5}")
    print("(tokens estimated by agentloop.run.budget.estimate_tokens; capped: first_prompt_tokens 1500)")
    with tempfile.TemporaryDirectory() as tmp:
        root = _buggy(Path(tmp) / "keys")
        measure("assert in test, bug in 32-line mod", root, ["tests/test_keys.py"], "key = hashkey(*args, **kwargs)")
    with tempfile.TemporaryDirectory() as tmp:
        root = _buggy(Path(tmp) / "pricing")
        line = next(ln for ln in _big_module().splitlines() if "/ 0" in ln)
        measure("bug at line 890 of a 1,070-line mod", root, ["tests/test_pricing.py"], line)
    with tempfile.TemporaryDirectory() as tmp:
        root = _buggy(Path(tmp) / "both")
        measure("both failures at once", root, ["tests"], "key = hashkey(*args, **kwargs)")
    assert KEYS
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
