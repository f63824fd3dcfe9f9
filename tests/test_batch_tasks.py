"""Task files: the minimal row works as written, bad rows give one line each and nothing loads, the
shipped JSON Schema and the Python validator agree, and the content id follows the files, not commits."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from conftest import BUGGY_CALC, CALC_TEST, git, make_repo

from agentloop.batch.tasks import TaskFileError, content_id, load_tasks, task_schema, validate_row
from agentloop.errors import EXIT_USAGE


@pytest.fixture
def world(tmp_path):
    """A git repository, a plain directory with the same files, and a held-out folder outside both."""
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC, "test_calc.py": CALC_TEST})
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "calc.py").write_text(BUGGY_CALC)
    (plain / "test_calc.py").write_text(CALC_TEST)
    held = tmp_path / "held-out" / "tests"
    held.mkdir(parents=True)
    (held / "test_held.py").write_text("from calc import add\n\ndef test_add():\n    assert add(1, 1) == 2\n")
    return tmp_path, repo, plain, held


def minimal(repo: Path, held: Path) -> dict:
    """The issue's minimal row, with its /abs paths made real."""
    return {"id": "calc-1", "task": "add() must return the sum", "source": {"path": str(repo), "commit": "HEAD"},
            "checks": ["python -m pytest -q tests"], "accept": ["python -m pytest -q held"],
            "accept_files": {str(held): "held"}, "samples": 2, "limits": {"max_turns": 4}}


def valid_rows(repo: Path, plain: Path, held: Path) -> list[dict]:
    return [
        minimal(repo, held),
        {"id": "plain.dir_1", "task": "fix add", "source": {"path": str(plain)}, "checks": ["pytest -q"]},
        {"id": "no-commit", "task": "fix add", "source": {"path": str(repo)}, "accept": ["pytest -q"]},
        {"id": "everything", "task": "fix add", "source": {"path": str(repo), "commit": "main"},
         "checks": ["pytest -q test_calc.py"], "accept": ["pytest -q held"], "accept_files": {str(held): "held"},
         "setup": ["python -c pass"], "samples": 4, "meta": {"difficulty": "easy", "n": [1, 2]},
         "limits": {"max_turns": 3, "max_tokens": 1000, "max_cost": 0.5, "rollout_timeout": 60,
                    "verify_timeout": 30.5}},
    ]


def structurally_invalid(repo: Path, held: Path) -> list[tuple[dict, str]]:
    """(row, the line the Python validator must give); the schema must reject each too."""
    base = minimal(repo, held)
    return [
        ({k: v for k, v in base.items() if k != "id"}, "id: missing"),
        (base | {"id": "has space"}, "id: 'has space' is not a usable id"),
        (base | {"task": "  "}, "task: must be a non-empty string"),
        (base | {"tsak": "x"}, "tsak: unknown field; did you mean 'task'?"),
        (base | {"source": "/abs/repo"}, "source: must be an object"),
        (base | {"source": {"path": str(repo), "comit": "HEAD"}},
         "source.comit: unknown field; did you mean 'commit'?"),
        (base | {"checks": "pytest"}, "checks: must be a list of shell commands"),
        (base | {"accept": None}, "accept: must be a list of shell commands, e.g. [\"python -m pytest -q\"], got null"),
        (base | {"checks": [""]}, "checks[0]: must be a non-empty command string"),
        ({k: v for k, v in base.items() if k not in ("accept", "accept_files")} | {"checks": []},
         "checks: no checks and no accept commands"),
        (base | {"accept": []}, "accept_files: given, but accept is empty"),
        (base | {"accept_files": {str(held): "../up"}}, "DEST '../up' must stay inside the workspace"),
        (base | {"accept_files": {str(held): "/etc"}}, "DEST '/etc' must stay inside the workspace"),
        (base | {"samples": 0}, "samples: must be a whole number, 1 or more"),
        (base | {"samples": "2"}, "samples: must be a whole number"),
        (base | {"limits": {"max_turns": 0}}, "limits.max_turns: must be a whole number, 1 or more, got 0"),
        (base | {"limits": {"max_turn": 4}}, "limits.max_turn: unknown field; did you mean 'max_turns'?"),
        (base | {"limits": {"max_cost": -1}}, "limits.max_cost: must be a number above 0"),
        (base | {"limits": {"rollout_timeout": True}}, "limits.rollout_timeout: must be a number above 0"),
        (base | {"meta": [1]}, "meta: must be an object"),
    ]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_the_minimal_row_works_as_written(world):
    tmp, repo, _, held = world
    [row] = load_tasks(write_jsonl(tmp / "tasks.jsonl", [minimal(repo, held)]))
    assert row.id == "calc-1" and row.task == "add() must return the sum"
    assert row.source.path == repo and row.source.commit == "HEAD" and row.source.is_git
    assert row.source.revision == git(repo, "rev-parse", "HEAD").strip()
    assert row.checks == ("python -m pytest -q tests",) and row.accept == ("python -m pytest -q held",)
    assert row.accept_files == ((held, "held"),) and row.samples == 2 and row.limits.max_turns == 4
    assert row.limits.max_cost is None and row.setup == () and row.meta == {} and row.origin == "tasks.jsonl:1"
    assert row.to_dict() == minimal(repo, held)


def test_every_valid_fixture_loads_and_the_schema_accepts_it(world):
    tmp, repo, plain, held = world
    rows = valid_rows(repo, plain, held)
    validator = jsonschema.Draft202012Validator(task_schema())
    jsonschema.Draft202012Validator.check_schema(task_schema())
    for raw in rows:
        assert [e.message for e in validator.iter_errors(raw)] == [], raw["id"]
    loaded = load_tasks(write_jsonl(tmp / "tasks.jsonl", rows))
    assert [r.id for r in loaded] == [r["id"] for r in rows]
    assert loaded[1].source.commit is None and not loaded[1].source.is_git
    assert loaded[2].source.commit == "HEAD" and loaded[2].samples == 1
    assert loaded[3].limits.verify_timeout == 30.5 and loaded[3].limits.rollout_timeout == 60.0
    assert loaded[3].meta == {"difficulty": "easy", "n": [1, 2]}


def test_schema_and_validator_reject_the_same_malformed_rows(world):
    tmp, repo, _, held = world
    validator = jsonschema.Draft202012Validator(task_schema())
    for raw, expected in structurally_invalid(repo, held):
        assert list(validator.iter_errors(raw)), expected
        row, problems = validate_row(raw, "t.jsonl:7", tmp)
        assert row is None and any(p.startswith("t.jsonl:7: ") and expected in p for p in problems), (expected,
                                                                                                        problems)


def test_not_an_object_is_rejected_by_both(world):
    tmp, *_ = world
    validator = jsonschema.Draft202012Validator(task_schema())
    for raw in (["a"], "text", 3, None):
        assert list(validator.iter_errors(raw))
        assert validate_row(raw, "t:1", tmp)[1][0].startswith("t:1: a row must be an object")


def test_bad_rows_give_one_line_each_and_nothing_loads(world):
    tmp, repo, plain, held = world
    good = valid_rows(repo, plain, held)
    path = write_jsonl(tmp / "tasks.jsonl", [
        good[0],
        good[1],
        {"id": "gone", "task": "t", "source": {"path": "/x"}, "checks": ["true"]},
        "{not json",
        "",
        good[1] | {"id": "calc-1"},
        {"id": "c", "task": "t", "source": {"path": str(plain), "commit": "HEAD"}, "checks": ["true"]},
        {"id": "d", "task": "t", "source": {"path": str(repo), "commit": "no-such-branch"}, "checks": ["true"]},
        good[0] | {"id": "e", "accept_files": {str(repo / "calc.py"): "held"}},
        good[0] | {"id": "f", "accept_files": {str(tmp / "missing"): "held"}},
    ])
    with pytest.raises(TaskFileError) as caught:
        load_tasks(path)
    assert caught.value.exit_code == EXIT_USAGE
    assert caught.value.problems == [
        "tasks.jsonl:3: source.path: /x is not a directory",
        "tasks.jsonl:4: not JSON: Expecting property name enclosed in double quotes at column 2",
        "tasks.jsonl:6: id: 'calc-1' is already the id of tasks.jsonl:1; ids must be unique",
        f"tasks.jsonl:7: source.commit: {plain} is not a git repository (no .git in it); drop commit to take the "
        "directory as it is, or point source.path at the repository's top folder",
        f"tasks.jsonl:8: source.commit: 'no-such-branch' is not a commit in {repo}",
        f"tasks.jsonl:9: accept_files['{repo / 'calc.py'}']: {repo / 'calc.py'} is inside the source {repo}: the "
        "model could read it; keep held-out files outside",
        f"tasks.jsonl:10: accept_files['{tmp / 'missing'}']: {tmp / 'missing'} does not exist",
    ]
    assert str(caught.value) == "\n".join(caught.value.problems)


def test_yaml_lists_and_json_lists_and_relative_paths(world):
    tmp, repo, plain, held = world
    (tmp / "tasks.yaml").write_text(
        "# two tasks\n"
        "- id: a\n  task: fix add\n  source: {path: repo}\n  checks: [pytest -q]\n"
        "- id: b\n  task: fix add\n  source: {path: plain}\n  checks: [pytest -q]\n  samples: 3\n"
        "- id: c\n  task: fix add\n  source: {path: plain}\n  checks: [pytest -q]\n  sampels: 3\n")
    with pytest.raises(TaskFileError) as caught:
        load_tasks(tmp / "tasks.yaml")
    assert caught.value.problems == ["tasks.yaml:11: sampels: unknown field; did you mean 'samples'?"]
    text = (tmp / "tasks.yaml").read_text().replace("sampels", "samples")
    (tmp / "tasks.yml").write_text(text)
    rows = load_tasks(tmp / "tasks.yml")
    assert [r.source.path for r in rows] == [repo, plain, plain] and rows[1].samples == 3
    assert rows[1].origin == "tasks.yml:6"
    (tmp / "tasks.json").write_text(json.dumps([{"id": "a", "task": "t", "source": {"path": "repo"}}]))
    with pytest.raises(TaskFileError) as caught:
        load_tasks(tmp / "tasks.json")
    assert caught.value.problems == ["tasks.json:row 1: checks: no checks and no accept commands: nothing would "
                                     "tell a pass from a fail"]
    (tmp / "noext").write_text(json.dumps({"id": "a", "task": "t", "source": {"path": "repo"}, "checks": ["x"]}))
    assert load_tasks(tmp / "noext")[0].id == "a"  # detected as JSONL by its content


def test_file_level_problems(world):
    tmp, *_ = world
    with pytest.raises(TaskFileError) as caught:
        load_tasks(write_jsonl(tmp / "empty.jsonl", []))
    assert caught.value.problems == ["empty.jsonl: no tasks in it; each row is one task (see docs/batch.md)"]
    (tmp / "map.yaml").write_text("id: a\ntask: b\n")
    with pytest.raises(TaskFileError, match=r"map.yaml: must be a YAML list of task rows"):
        load_tasks(tmp / "map.yaml")
    (tmp / "broken.yaml").write_text("- id: a\n  task: [unclosed\n")
    with pytest.raises(TaskFileError, match=r"broken.yaml:\d+: not YAML"):
        load_tasks(tmp / "broken.yaml")
    with pytest.raises(Exception, match="no such task file"):
        load_tasks(tmp / "nope.jsonl")


def test_content_id_follows_the_files_not_the_commit_ids(world):
    tmp, repo, plain, _ = world
    other = make_repo(tmp / "other", {"calc.py": BUGGY_CALC, "test_calc.py": CALC_TEST, "extra": "x"})
    git(other, "rm", "-q", "extra")
    git(other, "commit", "-qm", "same files as repo, another history")
    rows = load_tasks(write_jsonl(tmp / "t.jsonl", [
        {"id": "a", "task": "t", "source": {"path": str(repo)}, "checks": ["x"]},
        {"id": "b", "task": "t", "source": {"path": str(other)}, "checks": ["x"]},
        {"id": "c", "task": "t", "source": {"path": str(plain)}, "checks": ["x"]},
        {"id": "d", "task": "t", "source": {"path": str(other), "commit": "HEAD~1"}, "checks": ["x"]},
    ]))
    assert rows[0].source.revision != rows[1].source.revision
    ids = [content_id(r.source) for r in rows]
    assert ids[0] == ids[1] == ids[2] == git(repo, "rev-parse", "HEAD^{tree}").strip()
    assert ids[3] != ids[0]  # HEAD~1 still has `extra`
    before = sorted(p.name for p in plain.iterdir())
    (plain / "calc.py").write_text(BUGGY_CALC.replace("a - b", "a + b"))
    assert content_id(rows[2].source) != ids[0]
    assert sorted(p.name for p in plain.iterdir()) == before  # the snapshot wrote nothing into the folder
    (repo / "calc.py").write_text("uncommitted\n")
    assert content_id(rows[0].source) == ids[0]  # a git source is its commit, not its working tree


def test_schema_and_validator_agree_on_generated_rows(world):
    """Valid rows with fields changed to other valid or invalid values: the schema accepts a row exactly
    when the validator does (all paths here exist, so only structure decides)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    tmp, repo, plain, held = world
    validator = jsonschema.Draft202012Validator(task_schema())
    absent = object()
    pools = {
        "id": ["a", "calc-1", "x.y_z", "", " a", "a b", "-a", 3, absent],
        "task": ["fix it", "", "  ", None, absent],
        "source": [{"path": str(repo)}, {"path": str(plain)}, {"path": str(repo), "commit": "HEAD"},
                   {"path": str(repo), "commit": ""}, {"path": ""}, {}, {"path": str(repo), "x": 1}, "repo", absent],
        "checks": [["pytest -q"], [], [""], ["a", "b"], "pytest", [1], absent],
        "accept": [["pytest -q held"], [], [" "], None, absent],
        "accept_files": [{str(held): "held"}, {str(held): "."}, {str(held): "a/../b"}, {str(held): "/x"}, {},
                         {str(held): ""}, [str(held)], absent],
        "setup": [["make"], [], [""], "make", absent],
        "limits": [{"max_turns": 2}, {"max_turns": 0}, {"max_turns": 2.0}, {"max_turns": 2.5}, {"max_cost": 0},
                   {"max_cost": 0.1}, {"verify_timeout": "5"}, {"max_tokens": True}, {"turns": 1}, {}, absent],
        "samples": [1, 4, 0, -1, 2.0, "2", True, absent],
        "meta": [{}, {"a": [1]}, [], "m", absent],
        "extra_field": [absent, absent, absent, 1],
    }

    base = minimal(repo, held)
    changes = [(k, v) for k, values in pools.items() for v in values]

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.sampled_from(changes), max_size=3))
    def agree(picked):
        raw = dict(base)  # a valid row with up to three fields changed or removed
        for key, value in picked:
            raw[key] = value
        raw = {k: v for k, v in raw.items() if v is not absent}
        schema_ok = not list(validator.iter_errors(raw))
        row, problems = validate_row(raw, "t:1", tmp)
        assert schema_ok == (row is not None), (raw, problems)

    agree()
