"""The instruction count runs the workload under valgrind and prints a count per pair, for the
working tree and for each git revision asked for (from a worktree it removes afterwards)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.benchmarks import count_instructions


def git(*args: str, cwd: Path = count_instructions.ROOT) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()


def rows(out: str) -> dict[str, int]:
    found = re.findall(r"^\| ([^|]+) \| ([\d,]+) \| [\d.]+ \|$", out, re.M)
    return {name: int(value.replace(",", "")) for name, value in found}


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind")
@pytest.mark.timeout(300)  # two runs under valgrind, each about 20 s
def test_the_working_tree_gets_a_count_per_pair(capsys: pytest.CaptureFixture[str]) -> None:
    count_instructions.main(["--agents", "3", "--history", "1", "--pairs", "5"])
    out = capsys.readouterr().out
    counted = rows(out)
    assert list(counted) == ["working tree"], out  # the whole output, should a count go wrong
    assert counted["working tree"] > 200_000  # a pair is millions; the runs' noise far less


def test_a_revision_is_counted_from_a_worktree_removed_afterwards(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where each count runs (valgrind itself is the test above): a worktree checked out at
    the revision, then the working tree; no worktree is left behind."""
    before = git("worktree", "list", "--porcelain")
    head = git("rev-parse", "HEAD")
    roots: list[Path] = []

    def counted_at(root: Path, agents: int, history: int, pairs: int) -> float:
        roots.append(root)
        assert (agents, history, pairs) == (3, 1, 5)
        if root != count_instructions.ROOT:  # the revision's code, checked out
            assert git("rev-parse", "HEAD", cwd=root) == head
            assert (root / "router" / "engine.py").is_file()
        return 2_000_000.0 if root == count_instructions.ROOT else 3_000_000.0

    monkeypatch.setattr(shutil, "which", lambda _name: "/usr/bin/valgrind")
    monkeypatch.setattr(count_instructions, "per_pair", counted_at)
    count_instructions.main(["--agents", "3", "--history", "1", "--pairs", "5", "--rev", "HEAD"])
    out = capsys.readouterr().out
    assert rows(out) == {"HEAD": 3_000_000, "working tree": 2_000_000}
    assert "| HEAD | 3,000,000 | 1.500 |" in out
    assert roots[-1] == count_instructions.ROOT
    assert roots[0] != count_instructions.ROOT
    assert not roots[0].exists()  # removed
    assert git("worktree", "list", "--porcelain") == before


def test_sizes_below_one_are_refused() -> None:
    with pytest.raises(SystemExit):
        count_instructions.main(["--pairs", "0"])


def test_a_revision_git_does_not_know_is_refused_before_any_count(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: "/usr/bin/valgrind")
    monkeypatch.setattr(count_instructions, "per_pair", lambda *_: pytest.fail("counted"))
    with pytest.raises(SystemExit):
        count_instructions.main(["--rev", "HEAD", "--rev", "no-such-revision"])
    assert "--rev no-such-revision: not a commit" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind")
@pytest.mark.timeout(300)  # two runs under valgrind, each about 15 s
def test_the_simulator_gets_a_count_per_simulated_call(
    capsys: pytest.CaptureFixture[str],
) -> None:
    count_instructions.main(["--simulator", "longest_idle", "--days", "1", "--hours", "1"])
    out = capsys.readouterr().out
    assert "instructions per simulated call" in out
    counted = rows(out)
    assert list(counted) == ["working tree"], out  # the whole output, should a count go wrong
    assert 5_000 < counted["working tree"] < 5_000_000  # tens of thousands a call


def test_the_simulator_counts_each_revision_with_its_day(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, float, int]] = []

    def counted_at(root: Path, strategy: str, hours: float, days: int) -> float:
        seen.append((strategy, hours, days))
        return 60_000.0 if root == count_instructions.ROOT else 90_000.0

    monkeypatch.setattr(shutil, "which", lambda _name: "/usr/bin/valgrind")
    monkeypatch.setattr(count_instructions, "per_call", counted_at)
    monkeypatch.setattr(count_instructions, "per_pair", lambda *_: pytest.fail("pairs counted"))
    count_instructions.main(
        ["--simulator", "balanced", "--days", "2", "--hours", "6", "--rev", "HEAD"]
    )
    assert rows(capsys.readouterr().out) == {"HEAD": 90_000, "working tree": 60_000}
    assert seen == [("balanced", 6.0, 2)] * 2


@pytest.mark.parametrize(
    "argv",
    [
        ["--simulator", "balanced", "--days", "0"],
        ["--simulator", "balanced", "--hours", "0"],
        ["--simulator", "balanced", "--hours", "inf"],
        ["--simulator", "best_skill"],  # the event loop's strategies are not this queue's
    ],
)
def test_simulator_sizes_below_one_and_other_strategies_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        count_instructions.main(argv)
