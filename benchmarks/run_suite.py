"""Run the bug-fix suite in benchmarks/tasks/ through agentloop or aider and print the figures.

Each task is copied into a fresh temporary git repository; the tool runs there with a time limit
(its process group is killed past it). Then this script judges, never the tool's claim: "solved" is
the task's hidden `accept` command (task.yaml; the check when it has none), never passed to the tool,
run on a fresh copy of the tool's final tree whose test files are the task's pristine ones again
(edited ones restored, added ones and any added pytest configuration removed, `hidden/` test modules
laid over it); the visible check's verdict on the tool's tree, test files restored, is reported too.

    python benchmarks/run_suite.py --tool agentloop --tool aider --model openai/qwen2.5-coder-1.5b \
        --api-base http://127.0.0.1:8080/v1 --max-turns 4 --out results.json
    python benchmarks/run_suite.py --report results.json        # tables from a results file

With several --tool flags each task is run by every tool before the next task starts, so a run
cut short still compares the tools on the same tasks. Results are written after every run.

Figures per tool: solve rate; well-formed-edit rate (replies holding at least one well-formed edit,
over all final replies: agentloop counts them in its summary; for aider this script reads its
console output, see `aider_metrics`); median turns; median seconds; tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
GIT_ENV = {"GIT_AUTHOR_NAME": "suite", "GIT_AUTHOR_EMAIL": "suite@example.com",
           "GIT_COMMITTER_NAME": "suite", "GIT_COMMITTER_EMAIL": "suite@example.com"}


@dataclass
class Task:
    name: str
    dir: Path
    description: str
    check: str
    files: list[str]
    give_files: bool = True  # False: the tools are not told which files to edit (real-package tasks)
    source: str = ""         # the PyPI package==version a real task was cut from
    accept: str = ""         # hidden acceptance command: "solved" (default: the check)

    @property
    def repo(self) -> Path:
        return self.dir / "repo"

    @property
    def solution(self) -> Path:
        return self.dir / "solution"

    @property
    def hidden(self) -> Path:
        """Extra test modules only the accept command runs (never in the tool's tree)."""
        return self.dir / "hidden"

    def test_files(self) -> list[str]:
        return sorted(str(p.relative_to(self.repo)) for p in self.repo.rglob("test_*.py"))


def load_tasks(names: list[str] | None = None, root: Path = TASKS_DIR) -> list[Task]:
    tasks = []
    for spec in sorted(root.glob("*/task.yaml")):
        data = yaml.safe_load(spec.read_text(encoding="utf-8"))
        tasks.append(Task(spec.parent.name, spec.parent, data["description"].strip(), data["check"],
                          list(data.get("files", [])), bool(data.get("give_files", True)),
                          str(data.get("source", "")), str(data.get("accept", ""))))
    if names:
        by_name = {t.name: t for t in tasks}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise SystemExit(f"unknown task(s): {', '.join(unknown)}; known: {', '.join(by_name)}")
        tasks = [by_name[n] for n in names]
    return tasks


def prepare_repo(task: Task, dest: Path) -> Path:
    """The task's files in a new git repository with one commit."""
    shutil.copytree(task.repo, dest)
    env = os.environ | GIT_ENV
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "task", "--no-verify"]):
        subprocess.run(["git", "-c", "commit.gpgsign=false", *args], cwd=dest, env=env, check=True,
                       capture_output=True)
    return dest


def run_check(task: Task, repo: Path, timeout: float = 120) -> tuple[bool, str]:
    """The task's check with its original test files restored: the ground truth."""
    for rel in task.test_files():
        shutil.copy2(task.repo / rel, repo / rel)
    try:
        proc = subprocess.run(shlex.split(task.check), cwd=repo, capture_output=True, text=True,
                              timeout=timeout, env=os.environ | {"PYTHONDONTWRITEBYTECODE": "1"})
    except subprocess.TimeoutExpired:
        return False, "check timed out"
    return proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


PYTEST_CONFIG = {"conftest.py", "pytest.ini", ".pytest.ini", "tox.ini", "setup.cfg", "pyproject.toml"}


def is_test_file(rel: Path) -> bool:
    """Files that decide what a test run checks: test modules, anything in a test folder, pytest config."""
    return (rel.name in PYTEST_CONFIG or rel.name.startswith("test_")
            or any(part in ("test", "tests") for part in rel.parts[:-1]))


def run_accept(task: Task, tree: Path, timeout: float = 300) -> tuple[bool, str]:
    """The hidden accept command on a fresh copy of `tree` whose test files are the pristine ones."""
    with tempfile.TemporaryDirectory(prefix=f"accept-{task.name}-") as tmp:
        fresh = Path(tmp) / "repo"
        shutil.copytree(tree, fresh, symlinks=True,
                        ignore=shutil.ignore_patterns(".git", ".agentloop", "__pycache__", "*.pyc"))
        for path in sorted(fresh.rglob("*"), reverse=True):
            rel = path.relative_to(fresh)
            if (path.is_file() or path.is_symlink()) and is_test_file(rel) and not (task.repo / rel).is_file():
                path.unlink()  # a test module or conftest the tool added could patch the code under test
        for path in task.repo.rglob("*"):
            rel = path.relative_to(task.repo)
            if path.is_file() and is_test_file(rel):
                (fresh / rel).parent.mkdir(parents=True, exist_ok=True)
                (fresh / rel).unlink(missing_ok=True)
                shutil.copy2(path, fresh / rel)
        if task.hidden.is_dir():
            shutil.copytree(task.hidden, fresh, dirs_exist_ok=True)
        try:
            proc = subprocess.run(shlex.split(task.accept or task.check), cwd=fresh, capture_output=True,
                                  text=True, timeout=timeout, env=os.environ | {"PYTHONDONTWRITEBYTECODE": "1"})
        except subprocess.TimeoutExpired:
            return False, "accept timed out"
    return proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


def run_limited(cmd: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None,
                log: Path | None = None) -> tuple[int | None, str, float]:
    """Run cmd in its own session; past `timeout` the whole process group is killed."""
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True, text=True)
        try:
            code: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
        out.seek(0)
        text = out.read()
    if log is not None:
        log.write_text(text, encoding="utf-8")
    return code, text, round(time.monotonic() - started, 1)


@dataclass
class RunRecord:
    task: str
    tool: str
    solved: bool = False           # the hidden accept command passed
    check_passed: bool = False     # the visible check passed (test files restored)
    outcome: str = ""
    turns: int = 0
    replies: int = 0
    replies_with_edits: int = 0
    seconds: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_prompt_tokens: int = 0  # the first model call's prompt: what a slow local server must read first
    timed_out: bool = False
    exit_code: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def fix_command(task: Task, args: argparse.Namespace, api_base: str, *limits: str) -> list[str]:
    """The `agentloop fix` command line for `task` (files named only where the task gives them)."""
    cmd = [*shlex.split(args.agentloop), "fix", task.description, "--check", task.check, *limits,
           "--json", "--model", args.model, "--api-base", api_base]
    if task.give_files:
        for f in task.files:
            cmd += ["--file", f]
    if args.edit_format:
        cmd += ["--edit-format", args.edit_format]
    return cmd


def run_agentloop(task: Task, repo: Path, args: argparse.Namespace, log: Path | None) -> RunRecord:
    rec = RunRecord(task.name, "agentloop")
    cmd = fix_command(task, args, args.api_base, "--max-turns", str(args.max_turns),
                      "--time-limit", str(max(30, args.task_timeout - 20)))
    env = os.environ | {"PYTHONDONTWRITEBYTECODE": "1"}
    code, out, secs = run_limited(cmd, repo, args.task_timeout, env, log)
    rec.exit_code, rec.seconds, rec.timed_out = code, secs, code is None
    summary = None
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            try:
                summary = json.loads(line)
                break
            except ValueError:
                continue
    if summary is None:
        rec.outcome = "killed" if code is None else f"no summary (exit {code})"
        rec.notes.append(out[-500:])
        return rec
    rec.outcome = summary["outcome"]
    rec.turns = summary["turns"]
    rec.replies = summary["replies"]
    rec.replies_with_edits = summary["replies_with_edits"]
    rec.prompt_tokens = summary["prompt_tokens"]
    rec.completion_tokens = summary["completion_tokens"]
    rec.first_prompt_tokens = summary.get("first_prompt_tokens") or first_prompt_from_runs(repo)
    return rec


def first_prompt_from_runs(repo: Path) -> int:
    """The first model call's prompt tokens, read from the run's trajectory (for versions whose summary
    lacks `first_prompt_tokens`)."""
    for path in sorted((repo / ".agentloop" / "runs").glob("**/*.jsonl")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            reply = event.get("reply") if isinstance(event, dict) and event.get("type") == "model_call" else None
            if isinstance(reply, dict) and reply.get("prompt_tokens"):
                return int(reply["prompt_tokens"])
    return 0


_TOKENS = re.compile(r"^Tokens: ([\d.]+)(k?) sent(?:, [\d.]+k? cache \w+)*, ([\d.]+)(k?) received", re.M)
_APPLIED = re.compile(r"^Applied edit to ", re.M)
_EDIT_ERROR = re.compile(r"SEARCH/REPLACE block failed to match|did not conform to the edit format|"
                         r"Malformed|only the first \d+ lines|Unable to apply|Failed to apply", re.I)


def _num(value: str, k: str) -> int:
    return int(round(float(value) * (1000 if k else 1)))


def aider_metrics(out: str) -> dict[str, int]:
    """Replies, replies with an applied edit, and tokens, read from aider's console output.

    aider prints one "Tokens: N sent, M received." line after every model reply; the text up to
    the next such line is what it did with that reply. A reply counts as holding a well-formed
    edit when aider printed "Applied edit to ..." for it and no edit-format error. Token counts
    are as aider rounds them (e.g. 2.3k).
    """
    marks = list(_TOKENS.finditer(out))
    replies = len(marks)
    with_edits = 0
    prompt = completion = 0
    for i, m in enumerate(marks):
        prompt += _num(m.group(1), m.group(2))
        completion += _num(m.group(3), m.group(4))
        after = out[m.end(): marks[i + 1].start() if i + 1 < len(marks) else len(out)]
        if _APPLIED.search(after) and not _EDIT_ERROR.search(after):
            with_edits += 1
    first = _num(marks[0].group(1), marks[0].group(2)) if marks else 0
    return {"replies": replies, "replies_with_edits": with_edits, "prompt_tokens": prompt,
            "completion_tokens": completion, "first_prompt_tokens": first}


def run_aider(task: Task, repo: Path, args: argparse.Namespace, log: Path | None) -> RunRecord:
    rec = RunRecord(task.name, "aider")
    passed, output = run_check(task, repo)
    message = task.description
    if not passed:  # the same starting facts agentloop's first prompt holds
        message += f"\n\n`{task.check}` fails:\n```\n{output.strip()[-3000:]}\n```"
    cmd = [*shlex.split(args.aider), "--model", args.model, "--openai-api-base", args.api_base,
           "--openai-api-key", "no-key-needed", "--test-cmd", task.check, "--auto-test", "--yes-always",
           "--no-auto-commits", "--no-dirty-commits", "--no-gitignore", "--no-analytics", "--analytics-disable",
           "--no-check-update",
           "--no-show-model-warnings", "--no-pretty", "--no-stream", "--no-fancy-input",
           "--timeout", str(args.task_timeout), "--message", message]
    if args.aider_edit_format:
        cmd += ["--edit-format", args.aider_edit_format]
    if task.give_files:  # otherwise aider finds the files itself, from its repository map
        for rel in task.test_files():
            cmd += ["--read", rel]
        cmd += task.files
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")} | {
        "PYTHONDONTWRITEBYTECODE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # offline: no price-map fetch
        "HF_HUB_OFFLINE": "1", "AIDER_CHECK_UPDATE": "false", "AIDER_ANALYTICS": "false"}
    code, out, secs = run_limited(cmd, repo, args.task_timeout, env, log)
    rec.exit_code, rec.seconds, rec.timed_out = code, secs, code is None
    m = aider_metrics(out)
    rec.replies, rec.replies_with_edits = m["replies"], m["replies_with_edits"]
    rec.prompt_tokens, rec.completion_tokens = m["prompt_tokens"], m["completion_tokens"]
    rec.first_prompt_tokens = m["first_prompt_tokens"]
    rec.turns = rec.replies
    rec.outcome = "killed" if code is None else f"exit {code}"
    return rec


RUNNERS = {"agentloop": run_agentloop, "aider": run_aider}


def summarize(records: list[dict]) -> dict:
    n = len(records)
    replies = sum(r["replies"] for r in records)
    return {
        "tasks": n,
        "solved": sum(r["solved"] for r in records),
        "solve_rate": round(sum(r["solved"] for r in records) / n, 3) if n else 0.0,
        "well_formed_edit_rate": round(sum(r["replies_with_edits"] for r in records) / replies, 3) if replies else 0.0,
        "median_turns": statistics.median(r["turns"] for r in records) if n else 0,
        "median_seconds": statistics.median(r["seconds"] for r in records) if n else 0,
        "tokens": sum(r["prompt_tokens"] + r["completion_tokens"] for r in records),
        "timed_out": sum(r["timed_out"] for r in records),
        "median_first_prompt": statistics.median(firsts) if (firsts := [r["first_prompt_tokens"] for r in records
                                                                          if r.get("first_prompt_tokens")]) else 0,
    }


def markdown(results: dict) -> str:
    """Per-task rows and totals, tools side by side."""
    runs = results["runs"]
    tools = list(dict.fromkeys(r["tool"] for r in runs))
    tasks = list(dict.fromkeys(r["task"] for r in runs))
    by = {(r["task"], r["tool"]): r for r in runs}
    head = "| task | " + " | ".join(f"{t}: solved | turns | edits ok/replies | s | tokens" for t in tools) + " |"
    lines = [head, "|---|" + "---|---|---|---|---|" * len(tools)]
    for name in tasks:
        cells = []
        for tool in tools:
            r = by.get((name, tool))
            if r is None:
                cells.append("- | - | - | - | -")
                continue
            mark = "yes" if r["solved"] else ("no (killed)" if r["timed_out"] else "no")
            cells.append(f"{mark} | {r['turns']} | {r['replies_with_edits']}/{r['replies']} | "
                         f"{r['seconds']:.0f} | {r['prompt_tokens'] + r['completion_tokens']}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| tool | solved | solve rate | well-formed edits | median turns | median s | tokens | killed |",
              "|---|---|---|---|---|---|---|---|"]
    for tool in tools:
        s = summarize([r for r in runs if r["tool"] == tool])
        lines.append(f"| {tool} | {s['solved']}/{s['tasks']} | {s['solve_rate']:.0%} | "
                     f"{s['well_formed_edit_rate']:.0%} | {s['median_turns']} | {s['median_seconds']:.0f} | "
                     f"{s['tokens']} | {s['timed_out']} |")
    return "\n".join(lines) + "\n"


def rows(results: dict) -> str:
    """One row per run: tool, task, solved, turns, seconds, first-prompt tokens (0: no reply came back)."""
    lines = ["| tool | task | solved (accept) | visible check | outcome | turns | s | first-prompt tokens |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results["runs"]:
        mark = "yes" if r["solved"] else "no"
        check = {True: "pass", False: "fail", None: "-"}[r.get("check_passed")]
        lines.append(f"| {r['tool']} | {r['task']} | {mark} | {check} | {r['outcome']} | {r['turns']} | "
                     f"{r['seconds']:.0f} | "
                     f"{r.get('first_prompt_tokens') or '-'} |")
    lines += ["", "| tool | solved | median first prompt | ended past the limit |", "|---|---|---|---|"]
    for tool in dict.fromkeys(r["tool"] for r in results["runs"]):
        s = summarize([r for r in results["runs"] if r["tool"] == tool])
        lines.append(f"| {tool} | {s['solved']}/{s['tasks']} | {s['median_first_prompt']} | {s['timed_out']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tool", action="append", choices=sorted(RUNNERS), help="repeatable; default agentloop")
    ap.add_argument("--model", help="e.g. openai/qwen2.5-coder-1.5b")
    ap.add_argument("--api-base", help="e.g. http://127.0.0.1:8080/v1")
    ap.add_argument("--max-turns", type=int, default=4,
                    help="agentloop turns (aider allows 1 reply + 3 reflections = 4, not configurable)")
    ap.add_argument("--tasks", nargs="*", help="task names (default: all)")
    ap.add_argument("--task-timeout", type=float, default=600, help="seconds per task and tool")
    ap.add_argument("--edit-format", help="agentloop --edit-format (default: its own choice per model)")
    ap.add_argument("--aider-edit-format", help="aider --edit-format (default: its own choice per model)")
    ap.add_argument("--agentloop", default=f"{shlex.quote(sys.executable)} -m agentloop", help="command")
    ap.add_argument("--aider", default="aider", help="command, e.g. /path/to/venv/bin/aider")
    ap.add_argument("--out", type=Path, help="results JSON (written after every run)")
    ap.add_argument("--logs", type=Path, help="keep each run's console output and agentloop's runs here")
    ap.add_argument("--report", type=Path, nargs="+", help="print the tables of existing results files")
    args = ap.parse_args(argv)
    if args.report:
        merged: dict = {"runs": []}
        for path in args.report:
            merged["runs"] += json.loads(path.read_text(encoding="utf-8"))["runs"]
        print(markdown(merged), end="")
        print()
        print(rows(merged), end="")
        return 0
    if not args.model or not args.api_base:
        ap.error("--model and --api-base are required (see benchmarks/local_model.py for a local server)")
    tools = args.tool or ["agentloop"]
    tasks = load_tasks(args.tasks)
    results = {"command": " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])), "model": args.model,
               "max_turns": args.max_turns, "task_timeout": args.task_timeout, "edit_format": args.edit_format,
               "aider_edit_format": args.aider_edit_format, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                      time.gmtime()),
               "runs": []}
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        for tool in tools:
            with tempfile.TemporaryDirectory(prefix=f"suite-{task.name}-") as tmp:
                repo = prepare_repo(task, Path(tmp) / "repo")
                log = args.logs / f"{task.name}.{tool}.log" if args.logs else None
                rec = RUNNERS[tool](task, repo, args, log)
                rec.solved, _ = run_accept(task, repo)
                rec.check_passed, _ = run_check(task, repo)
                if args.logs and (repo / ".agentloop" / "runs").is_dir():
                    shutil.copytree(repo / ".agentloop" / "runs", args.logs / f"{task.name}.{tool}.runs",
                                    dirs_exist_ok=True)
            results["runs"].append(asdict(rec))
            print(f"{task.name:20} {tool:9} solved={'yes' if rec.solved else 'no ':3} "
                  f"check={'pass' if rec.check_passed else 'fail'} outcome={rec.outcome:16} "
                  f"turns={rec.turns} edits={rec.replies_with_edits}/{rec.replies} {rec.seconds:.0f}s "
                  f"tokens={rec.tokens}", flush=True)
            if args.out:
                args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print()
    print(markdown(results), end="")
    print()
    print(rows(results), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
