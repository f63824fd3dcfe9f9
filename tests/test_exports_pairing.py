"""Exports that trainers can trust: samples of one task share a group id; preference pairs only join
runs of the same task, starting tree content and checks, accepted against failed on the merits, never
an interrupted / error / incomplete run, never two identical outputs. Real runs through the scripted
model server, plus copies of them edited by hand where one field is the point."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import BUGGY_CALC, CALC_TEST, PYTEST, git, make_repo
from fake_llm import FakeLLM
from test_fix_e2e import FIX_ADD

from agentloop.cli import cli
from agentloop.record.exporters import FORMATS, group_id, preference_pairs, start_tree
from agentloop.record.runlog import Run

CONFIG = f"checks:\n  - run: {PYTEST}\n"
READ = {"tool_calls": [{"name": "read_file", "arguments": {"path": "calc.py"}}]}
UNSURE = {"content": "I am not sure."}


def fix(repo: Path, script: list[dict], *args: str) -> Run:
    with FakeLLM(script) as server:
        result = CliRunner().invoke(cli, ["fix", "-m", "openai/fake", "--api-base", server.api_base, "--json", *args],
                                    catch_exceptions=False)
    assert result.exit_code in (0, 1), result.stderr
    git(repo, "checkout", "-q", "--", "calc.py")  # an accepted run's fix is applied back: undo it
    return Run.load(Path(json.loads(result.stdout.strip().splitlines()[-1])["run_dir"]))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Real runs of one task, plus one with other checks, one from another tree, and one from the same
    tree at another commit id."""
    repo = make_repo(tmp_path_factory.mktemp("pairs") / "repo",
                     {"calc.py": BUGGY_CALC, "test_calc.py": CALC_TEST, ".agentloop.yaml": CONFIG})
    done: dict[str, Run] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(repo)
        mp.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        for name in ("OPENAI_API_KEY", "AGENTLOOP_MODEL"):
            mp.delenv(name, raising=False)
        done["accepted"] = fix(repo, [{"content": FIX_ADD}])
        done["no_edit"] = fix(repo, [UNSURE], "--max-turns", "1")
        done["tool_accepted"] = fix(repo, [READ, {"content": FIX_ADD}])
        done["tool_failed"] = fix(repo, [READ, UNSURE], "--max-turns", "1")  # same first reply as tool_accepted
        done["typo_check"] = fix(repo, [UNSURE], "--max-turns", "1", "--check", f"{PYTEST} test_calcc.py")
        (repo / "notes.txt").write_text("an uncommitted file: another starting tree\n")
        done["other_tree"] = fix(repo, [{"content": "Let me look."}], "--max-turns", "1")
        (repo / "notes.txt").unlink()
        git(repo, "commit", "-q", "--allow-empty", "-m", "same tree, new commit id")
        done["new_commit"] = fix(repo, [{"content": "Hmm."}], "--max-turns", "1")
    return repo, done


def names(pairs, done) -> set[tuple[str, str]]:
    by_dir = {run.run_dir: name for name, run in done.items()}
    return {(by_dir.get(c.run_dir, c.run_dir.name), by_dir.get(r.run_dir, r.run_dir.name)) for c, r in pairs}


def edited_copy(run: Run, where: Path, *, header: dict | None = None, outcome: dict | None = None,
                drop_footer: bool = False, keep_workspace: bool = True) -> Run:
    """A copy of a recorded run with some header / outcome fields changed."""
    target = where / f"{run.run_dir.name}-{len(list(where.iterdir())) if where.exists() else 0}"
    shutil.copytree(run.run_dir, target)
    if not keep_workspace:
        (target / "workspace.json").unlink()
    lines = []
    for line in (target / "trajectory.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["type"] == "header" and header:
            event.update(header)
        if event["type"] == "outcome":
            if drop_footer:
                continue
            event.update(outcome or {})
        lines.append(json.dumps(event))
    (target / "trajectory.jsonl").write_text("\n".join(lines) + "\n")
    (target / "summary.json").unlink(missing_ok=True)
    return Run.load(target)


def test_the_recorded_outcomes_are_what_the_rules_are_about(runs):
    _, done = runs
    assert {k: r.outcome for k, r in done.items()} == {
        "accepted": "accepted", "no_edit": "budget_exhausted", "tool_accepted": "accepted",
        "tool_failed": "budget_exhausted", "typo_check": "budget_exhausted", "other_tree": "budget_exhausted",
        "new_commit": "budget_exhausted"}
    assert done["new_commit"].header["base_commit"] != done["accepted"].header["base_commit"]
    assert start_tree(done["new_commit"]) == start_tree(done["accepted"]) != start_tree(done["other_tree"])


def test_pairs_only_within_one_task_tree_and_checks(runs):
    _, done = runs
    assert names(preference_pairs(list(done.values())), done) == {
        ("accepted", "no_edit"), ("accepted", "tool_failed"), ("accepted", "new_commit"),
        ("tool_accepted", "no_edit"), ("tool_accepted", "new_commit"),
        # not typo_check (other checks), not other_tree (other content), not tool_accepted/tool_failed
        # (the same first reply: nothing to prefer)
    }


def test_same_tree_at_another_commit_id_is_the_same_task(runs):
    _, done = runs
    pairs = names(preference_pairs([done["accepted"], done["new_commit"]]), done)
    assert pairs == {("accepted", "new_commit")}


def test_a_typo_check_is_never_paired_against_the_real_task(runs):
    _, done = runs
    assert list(preference_pairs([done["accepted"], done["typo_check"]])) == []
    assert done["typo_check"].header["checks"][0]["run"].endswith("test_calcc.py")


def test_identical_outputs_are_never_a_pair(runs, tmp_path, monkeypatch):
    repo, done = runs
    assert list(preference_pairs([done["tool_accepted"], done["tool_failed"]])) == []
    out = tmp_path / "dpo.jsonl"
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(cli, ["export", *[str(r.run_dir) for r in done.values()], "--format", "openai-dpo",
                                      "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5
    assert all(r["preferred_output"] != r["non_preferred_output"] for r in rows)


def test_interrupted_error_incomplete_and_no_turn_runs_are_never_rejected(runs, tmp_path):
    _, done = runs
    failed = done["no_edit"]
    copies = {
        "interrupted": edited_copy(failed, tmp_path, outcome={"outcome": "interrupted"}),
        "error": edited_copy(failed, tmp_path, outcome={"outcome": "error"}),
        "incomplete": edited_copy(failed, tmp_path, drop_footer=True),
        "gave_up_at_once": edited_copy(failed, tmp_path, outcome={"outcome": "gave_up",
                                                                  "totals": {**failed.footer["totals"], "turns": 0}}),
    }
    for name, run in copies.items():
        assert list(preference_pairs([done["accepted"], run])) == [], name
    gave_up = edited_copy(failed, tmp_path, outcome={"outcome": "gave_up"})
    assert len(list(preference_pairs([done["accepted"], gave_up]))) == 1  # gave up after a real turn
    # An accepted run is never the rejected side, even against a higher reward.
    assert list(preference_pairs([done["accepted"], done["tool_accepted"]])) == []


def test_the_starting_tree_falls_back_to_the_base_commit_only_when_the_start_was_committed(runs, tmp_path):
    _, done = runs
    run = done["no_edit"]
    footer_workspace = {k: v for k, v in run.footer["workspace"].items() if k != "start_tree"}
    bare = edited_copy(run, tmp_path, outcome={"workspace": footer_workspace}, keep_workspace=False)
    assert start_tree(bare) == start_tree(run)  # from base_commit^{tree} in the recorded repository
    assert len(list(preference_pairs([done["accepted"], bare]))) == 1
    patched = edited_copy(run, tmp_path, header={"base_patch": "base.patch"}, outcome={"workspace": footer_workspace},
                          keep_workspace=False)
    assert start_tree(patched) is None  # unknown start: never paired
    assert list(preference_pairs([done["accepted"], patched])) == []


def test_group_ids(runs, tmp_path):
    _, done = runs
    same_task = ["accepted", "no_edit", "tool_accepted", "tool_failed", "new_commit"]
    assert len({group_id(done[k]) for k in same_task}) == 1
    assert len({group_id(done[k]) for k in (same_task[0], "typo_check", "other_tree")}) == 3
    tagged = edited_copy(done["no_edit"], tmp_path, header={"task_id": "calc-1"})
    assert group_id(tagged) == "calc-1"
    # A task id is part of the task: a tagged run is not paired with untagged runs of the same text.
    assert list(preference_pairs([done["accepted"], tagged])) == []
    tagged_ok = edited_copy(done["accepted"], tmp_path, header={"task_id": "calc-1"})
    assert len(list(preference_pairs([tagged_ok, tagged]))) == 1


def test_group_id_is_in_every_episode_row(runs):
    _, done = runs
    rows = list(FORMATS["rlef"](list(done.values())))
    assert len(rows) == len(done)
    assert {r["group_id"] for r in rows} == {group_id(r) for r in done.values()}
    assert all(r["extra"]["group_id"] == group_id(run) for r, run in zip(FORMATS["atif"](list(done.values())),
                                                                             done.values(), strict=True))


def test_rl_episodes_leave_out_runs_that_did_not_end_on_the_merits(runs, tmp_path):
    _, done = runs
    failed = done["no_edit"]
    broken = [edited_copy(failed, tmp_path, outcome={"outcome": "interrupted"}),
              edited_copy(failed, tmp_path, outcome={"outcome": "error"}),
              edited_copy(failed, tmp_path, drop_footer=True)]
    rows = list(FORMATS["rlef"]([done["accepted"], failed, *broken]))
    assert [r["episode_id"] for r in rows] == [done["accepted"].run_id, failed.run_id]
