"""``python -m simulations``: every subcommand end to end on the real simulator, exit codes,
and the confidence intervals of ``compare``."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest

import simulations.__main__ as cli_main
from router.domain import Channel
from router.memory_store import MemoryStore
from router.server import RunningServer, create_server
from router.settings import Settings
from simulations import outputs
from simulations.__main__ import main, parse_rate
from simulations.cli import COMPARE_HELP
from simulations.compare import summarize, t_quantile_95
from simulations.erlang import erlang_a, erlang_c
from simulations.scenario import load_scenario
from simulations.simulator import _Simulation
from simulations.trace import TraceCall, generate_trace, read_trace, write_trace
from tests.simulation.test_report import assert_self_contained

TINY = """\
# Two channels, six agents, one hour: a second or so per simulation.
name: tiny
duration_s: 3600
drain_s: 1800
timeline_bucket_s: 600
policy: {strategy: balanced, max_occupancy: 0.85}
sla: {voice: 20, chat: 60}
agents:
  - id_prefix: agent
    count: 5
    languages: [en]
    skills: {billing: 6}
    channels: {voice: 1, chat: 2}
    quality: [0.6, 0.75]
  - id: star
    languages: [en]
    skills: {billing: 9}
    channels: {voice: 1, chat: 2}
    quality: 0.95
    top_performer: true
arrivals:
  - {channel: voice, rate_per_hour: 70, skills: {billing: 3}, language: en,
     handle: 200, patience: 120}
  - {channel: chat, rate_per_hour: 40, skills: {billing: 2}, language: en,
     handle: 300, patience: 180}
"""


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    """The tiny scenario as a file."""
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def test_help_teaches_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    """``--help`` names every command and shows runnable examples and the exit codes."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for command in ("run", "compare", "trace", "replay", "erlang"):
        assert command in text
    assert "examples:" in text
    assert "python -m simulations compare" in text
    assert "exit codes" in text


def test_run_writes_kpis_records_and_a_self_contained_report(
    scenario: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``run`` writes kpis.json, records.csv and report.html (four inline charts, no external
    URL) and prints a KPI table."""
    out = tmp_path / "run"
    assert main(["run", str(scenario), "--seed", "2", "--out", str(out), "--quiet"]) == 0
    kpis = json.loads((out / "kpis.json").read_text())
    assert kpis["scenario"] == "tiny"
    assert kpis["seed"] == 2
    rows = (out / "records.csv").read_text().splitlines()
    assert rows[0].startswith("call_id,channel,arrival_s")
    assert len(rows) - 1 == kpis["calls"]
    page = assert_self_contained((out / "report.html").read_text())
    assert len(page.images) == 4
    printed = capsys.readouterr().out
    assert "service level" in printed
    assert re.search(r"^voice\s+\d+", printed, re.MULTILINE)
    # two channels and an occupancy window: the event loop, and the reasons said
    assert re.search(
        r"^engine: event loop \(.*a rolling-occupancy window.*\), \d+\.\d s$", printed, re.MULTILINE
    )


def test_run_and_compare_say_which_engine_ran(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Erlang check scenario is a day any free agent may take any call: longest-idle
    takes the pooled shortcut, best-skill the event loop."""
    scenario = Path(__file__).resolve().parents[2] / "simulations/scenarios/erlang_check.yaml"
    assert main(["run", str(scenario), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert re.search(r"^engine: pooled shortcut, ", capsys.readouterr().out, re.MULTILINE)
    argv = ["compare", str(scenario), "--policies", "longest_idle,best_skill", "--seeds", "1"]
    assert main([*argv, "--out", str(tmp_path / "cmp"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "engine, longest_idle (seed 1): pooled shortcut\n" in printed
    assert "engine, best_skill (seed 1): event loop (the best_skill strategy)\n" in printed


def test_every_long_step_shows_on_stderr_unless_quiet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A day on the pooled shortcut shows a progress bar over simulated time as the event
    loop does, then the KPIs and the writing of the outputs say they are under way;
    --quiet shows none of it."""
    scenario = Path(__file__).resolve().parents[2] / "simulations/scenarios/erlang_check.yaml"
    out = tmp_path / "run"
    assert main(["run", str(scenario), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "engine: pooled shortcut" in captured.out
    assert "sim s" in captured.err
    assert "computing KPIs" in captured.err
    assert f"writing outputs to {out}" in captured.err
    assert main(["run", str(scenario), "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_run_default_out_dir_and_policy(
    scenario: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --out the files go to out/run-<scenario>; --policy overrides the scenario's."""
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(scenario), "--policy", "longest-idle", "--quiet"]) == 0
    kpis = json.loads((tmp_path / "out" / "run-tiny" / "kpis.json").read_text())
    assert kpis["policy"] == "longest_idle"


def test_compare_writes_intervals_for_each_policy(scenario: Path, tmp_path: Path) -> None:
    """2 policies x 2 seeds: compare.json holds 4 runs and, per KPI and policy, a mean
    inside its 95 % t interval over n = 2; the report has the grouped and small-multiple
    charts."""
    out = tmp_path / "cmp"
    argv = ["compare", str(scenario), "--policies", "balanced,best_skill", "--seeds", "2"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    data = json.loads((out / "compare.json").read_text())
    assert data["policies"] == ["balanced", "best_skill"]
    assert data["seeds"] == [1, 2]
    assert len(data["runs"]) == 4
    level = data["metrics"]["overall.service_level"]["policies"]["balanced"]
    assert level["n"] == 2
    assert level["ci_low"] <= level["mean"] <= level["ci_high"]
    values = [
        r["values"]["overall.service_level"] for r in data["runs"] if r["policy"] == "balanced"
    ]
    expected = summarize(values)
    assert level["half_width"] == pytest.approx(expected.half_width)
    assert expected.half_width == pytest.approx(12.706 * abs(values[0] - values[1]) / 2)
    assert "channels.voice.service_level" in data["metrics"]
    page = assert_self_contained((out / "report.html").read_text())
    assert len(page.images) == 2


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("agents: [{id: a, skills: {billing: 11}}]\narrivals: []", "agents[0].skills.billing"),
        ("pool: {agents: 3, rate_per_hour: 10}", "pool.mean_handle_s"),
        ("pool: {agents: 3, rate_per_hour: 10, mean_handle_s: 60}\ndurration_s: 5", "durration_s"),
    ],
)
def test_bad_scenario_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, field: str
) -> None:
    """A scenario error is one line naming the field, exit code 2, no traceback."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert field in err
    assert "Traceback" not in err


def test_usage_errors_exit_2(scenario: Path, tmp_path: Path) -> None:
    """Missing files, unknown policies, bad rates and remote targets are usage errors."""
    assert main(["run", str(tmp_path / "nope.yaml"), "--quiet"]) == 2
    assert main(["run", str(scenario), "--policy", "fastest", "--quiet"]) == 2
    assert main(["erlang", "--rate", "lots", "--aht", "180", "--agents", "10"]) == 2
    assert main(["trace", str(scenario), "--seed", "1", "--out", str(tmp_path / "t.txt")]) == 2
    target = ["--target", "10.1.2.3:50051", "--quiet"]
    assert main(["replay", str(scenario), *target]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["run"])
    assert exit_info.value.code == 2


def _one_error(err: str, prefix: str) -> None:
    """``err`` is one ``error: ...`` line starting with ``prefix``, no traceback."""
    assert err.startswith(f"error: {prefix}"), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err


def test_an_output_that_cannot_be_written_is_an_error_naming_it(
    scenario: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """kpis.json or compare.json taken by a folder, a trace under /proc: one line naming
    the path and why, exit code 2."""
    out = tmp_path / "run"
    (out / "kpis.json").mkdir(parents=True)
    assert main(["run", str(scenario), "--seed", "2", "--out", str(out), "--quiet"]) == 2
    _one_error(capsys.readouterr().err, f"cannot write {out / 'kpis.json'}: Is a directory")
    cmp = tmp_path / "cmp"
    (cmp / "compare.json").mkdir(parents=True)
    argv = ["compare", str(scenario), "--policies", "balanced", "--seeds", "1", "--quiet"]
    assert main([*argv, "--out", str(cmp)]) == 2
    _one_error(capsys.readouterr().err, f"cannot write {cmp / 'compare.json'}: Is a directory")
    assert main(["trace", str(scenario), "--seed", "1", "--out", "/proc/nope/x.csv"]) == 2
    _one_error(capsys.readouterr().err, "cannot write /proc/nope")
    taken = tmp_path / "taken.csv"
    taken.mkdir()
    assert main(["trace", str(scenario), "--seed", "1", "--out", str(taken)]) == 2
    _one_error(capsys.readouterr().err, f"cannot write {taken}: Is a directory")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_output_name_taken_by_a_folder_is_refused_before_the_work(
    scenario: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A folder where an output file goes is reported before anything runs (it was found
    after the whole simulation or replay, whose figures were then lost)."""

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the work ran")

    monkeypatch.setattr(cli_main, "simulate", never)
    monkeypatch.setattr(cli_main, "run_comparison", never)
    for command, name in (("run", "records.csv"), ("compare", "report.html")):
        out = tmp_path / command
        (out / name).mkdir(parents=True)
        assert main([command, str(scenario), "--out", str(out), "--quiet"]) == 2
        _one_error(capsys.readouterr().err, f"cannot write {out / name}: Is a directory")


def _on_a_full_disk(
    argv: list[str], out: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    """Run ``argv`` into ``out`` (holding the previous run's report) on a disk that fills as
    the report is written: exit code 2, one error line naming the folder, the folder as it
    was, no ``wrote`` line; what the command printed."""

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("simulations.__main__.report.write_run_report", full)
    monkeypatch.setattr("simulations.__main__.report.write_compare_report", full)
    out.mkdir()
    (out / "report.html").write_text("the previous run's")
    assert main([*argv, "--out", str(out), "--quiet"]) == 2
    printed, err = capsys.readouterr()
    _one_error(err, f"cannot write {out}: No space left on device")
    assert _files(out) == {"report.html": "the previous run's"}
    assert "wrote" not in printed
    return printed


@pytest.mark.parametrize(
    "command",
    [["run", "--seed", "2"], ["compare", "--policies", "balanced,best_skill", "--seeds", "2"]],
    ids=["run", "compare"],
)
def test_a_full_disk_still_shows_the_figures(
    scenario: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    """A disk that fills as a command writes its files: an error naming the folder, exit
    code 2, but the figures the run took to make are printed all the same (they were lost),
    and no ``wrote`` line claims the files."""
    name, *options = command
    printed = _on_a_full_disk([name, str(scenario), *options], tmp_path / name, monkeypatch, capsys)
    if name == "run":
        assert re.search(r"^voice\s+\d+", printed, re.MULTILINE)
        assert re.search(r"^engine: event loop ", printed, re.MULTILINE)
    else:
        assert re.search(r"^Service level, voice\s+\d", printed, re.MULTILINE)
        assert "vs balanced" in printed
        assert "engine, best_skill (seed 1): " in printed


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_an_error_naming_it(
    scenario: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder the user may not write: one line naming it, exit code 2."""
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(0o500)
    try:
        assert main(["run", str(scenario), "--seed", "2", "--out", str(out), "--quiet"]) == 2
    finally:
        out.chmod(0o700)
    assert "Permission denied" in capsys.readouterr().err


def _files(folder: Path) -> dict[str, str]:
    """Every entry of ``folder`` (hidden ones included) -> its text ("" for a folder)."""
    return {p.name: "" if p.is_dir() else p.read_text() for p in folder.iterdir()}


def test_ctrl_c_while_writing_keeps_the_previous_outputs_whole(
    scenario: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Interrupted while it writes, a run leaves the folder as the previous run left it (no
    kpis.json of one run next to the report of another, nothing half-written)."""
    out = tmp_path / "run"
    assert main(["run", str(scenario), "--seed", "2", "--out", str(out), "--quiet"]) == 0
    before = _files(out)
    assert sorted(before) == ["kpis.json", "records.csv", "report.html"]
    capsys.readouterr()

    def interrupt(*args: object, **kwargs: object) -> Path:
        raise KeyboardInterrupt

    monkeypatch.setattr("simulations.__main__.report.write_run_report", interrupt)
    assert main(["run", str(scenario), "--seed", "3", "--out", str(out), "--quiet"]) == 130
    assert capsys.readouterr().err == "interrupted\n"
    assert _files(out) == before


def test_ctrl_c_while_moving_outputs_in_says_the_folder_is_incomplete(
    scenario: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Interrupted as the new files replace the old ones, a run leaves none of the previous
    run's files beside the new ones, and says the folder is incomplete."""
    out, new = tmp_path / "run", tmp_path / "new"
    assert main(["run", str(scenario), "--seed", "3", "--out", str(new), "--quiet"]) == 0
    assert main(["run", str(scenario), "--seed", "2", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    real = os.replace
    moved: list[object] = []

    def replace_once(src: str | Path, dst: str | Path) -> None:
        if moved:
            raise KeyboardInterrupt
        moved.append(dst)
        real(src, dst)

    monkeypatch.setattr("simulations.outputs.os.replace", replace_once)
    assert main(["run", str(scenario), "--seed", "3", "--out", str(out), "--quiet"]) == 130
    assert capsys.readouterr().err == f"interrupted; {out} is incomplete\n"
    left = _files(out)
    assert len(left) == 1  # the first file moved in; the earlier run's are gone
    for name, text in left.items():
        if name == "report.html":
            assert "seed 3" in text
        else:
            assert text == (new / name).read_text()


HOLD_STAGE = """\
import sys, time
from pathlib import Path
from simulations import outputs
with outputs.staged(Path(sys.argv[1])) as stage:
    (stage / "kpis.json").write_text("{}")
    print(stage.name, flush=True)
    time.sleep(50)
"""
"""A command that stops while it writes its outputs into ``argv[1]``, printing its stage."""


def _writer(out: Path) -> tuple[subprocess.Popen[str], str]:
    """A process stopped as it writes into ``out``, and the name of its hidden folder."""
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    writer = subprocess.Popen(
        [sys.executable, "-c", HOLD_STAGE, str(out)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert writer.stdout is not None
    return writer, writer.stdout.readline().strip()


def test_a_killed_runs_hidden_folder_goes_with_the_next_run_not_a_live_ones(
    scenario: Path, tmp_path: Path
) -> None:
    """The hidden folder of a run killed as it wrote (SIGKILL: nothing of it could clean up)
    is removed by the next run into that folder; that of a run still writing there is not."""
    out = tmp_path / "run"
    killed, dead_stage = _writer(out)
    live, live_stage = _writer(out)
    try:
        assert dead_stage.startswith(".writing-")
        assert live_stage.startswith(".writing-")
        killed.kill()
        killed.wait(timeout=10)
        assert (out / dead_stage / "kpis.json").exists()
        assert main(["run", str(scenario), "--seed", "2", "--out", str(out), "--quiet"]) == 0
        assert not (out / dead_stage).exists()
        assert (out / live_stage / "kpis.json").read_text() == "{}"
        assert sorted(_files(out)) == [live_stage, "kpis.json", "records.csv", "report.html"]
    finally:
        for writer in (killed, live):
            writer.kill()
            writer.wait(timeout=10)
            assert writer.stdout is not None
            writer.stdout.close()


def test_a_hidden_folder_taken_before_its_lock_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another command's clean-up may remove a run's fresh hidden folder in the instant
    before the run locks it: the run makes another and writes its outputs all the same."""
    new_folder = outputs._new_folder
    taken: list[str] = []

    def taken_once(folder: Path) -> Callable[[], tuple[int, str]]:
        make = new_folder(folder)

        def made_then_taken() -> tuple[int, str]:
            handle, name = make()
            if not taken:  # another command's sweep, before this run's lock
                taken.append(name)
                os.rmdir(name)
            return handle, name

        return made_then_taken

    monkeypatch.setattr(outputs, "_new_folder", taken_once)
    out = tmp_path / "out"
    with outputs.staged(out) as stage:
        (stage / "kpis.json").write_text("{}")
        assert str(stage) != taken[0]
    assert _files(out) == {"kpis.json": "{}"}


def test_the_clean_up_leaves_the_users_own_dot_writing_files(tmp_path: Path) -> None:
    """Only the hidden folders and files the commands make are cleaned up: a user's own
    ``.writing-drafts`` folder or ``.writing-log`` file next to the outputs (no process holds
    them) stays, with what it holds."""
    out = tmp_path / "out"
    (out / ".writing-drafts").mkdir(parents=True)
    (out / ".writing-drafts" / "ch1.md").write_text("notes")
    (out / ".writing-log").write_text("x")
    (out / ".writing-abcd1234").mkdir()  # a stage's shape, but none of ours
    with outputs.staged(out) as stage:
        (stage / "kpis.json").write_text("{}")
    with outputs.staged_file(out / "day.csv") as stage:
        stage.write_text("a,b\n")
    assert (out / ".writing-drafts" / "ch1.md").read_text() == "notes"
    assert (out / ".writing-log").read_text() == "x"
    assert (out / ".writing-abcd1234").is_dir()
    assert (out / "kpis.json").read_text() == "{}"


def test_a_hidden_folder_removed_before_it_is_opened_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another command's clean-up may remove a run's fresh hidden folder between its making
    and its opening: the run makes another (it answered "No such file or directory" for a
    folder that exists)."""
    made: list[str] = []
    mkdtemp = tempfile.mkdtemp

    def made_then_taken(**kwargs: str) -> str:
        name = mkdtemp(**kwargs)
        if not made:  # swept at once
            os.rmdir(name)
        made.append(str(name))
        return str(name)

    monkeypatch.setattr(tempfile, "mkdtemp", made_then_taken)
    out = tmp_path / "out"
    with outputs.staged(out) as stage:
        (stage / "kpis.json").write_text("{}")
    assert len(made) == 2
    assert _files(out) == {"kpis.json": "{}"}


def test_a_reader_that_goes_away_costs_the_rest_of_the_output_not_the_files(
    scenario: Path, tmp_path: Path
) -> None:
    """``compare ... | head -1`` with unbuffered output: the pipe closes after the first
    line; the comparison's files are written all the same, without a traceback."""
    root = str(Path(__file__).resolve().parents[2])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
    }
    out = tmp_path / "cmp"
    argv = ["compare", str(scenario), "--policies", "balanced,random", "--seeds", "1"]
    command = [sys.executable, "-m", "simulations", *argv, "--out", str(out), "--quiet"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=root
    ) as child:
        assert child.stdout is not None
        child.stdout.readline()
        child.stdout.close()  # the reader is gone
        _, err = child.communicate(timeout=120)
    assert b"Traceback" not in err, err.decode()
    assert sorted(_files(out)) == ["compare.json", "report.html"]


def test_the_interrupted_line_stands_on_its_own(
    scenario: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ctrl-C under a progress bar: the bar is cleared and ``interrupted`` starts its line."""
    calls: list[int] = []
    arrive = _Simulation._arrive

    def arrive_then_stop(self: _Simulation, index: int) -> None:
        calls.append(index)
        if len(calls) > 20:
            raise KeyboardInterrupt
        arrive(self, index)

    monkeypatch.setattr(_Simulation, "_arrive", arrive_then_stop)
    assert main(["run", str(scenario), "--out", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err
    assert "sim s" in err  # the bar was drawn
    shown = ""  # the last line as a terminal shows it: each carriage return overwrites
    for part in err.removesuffix("\n").split("\n")[-1].split("\r"):
        shown = part + shown[len(part) :]
    assert shown.rstrip() == "interrupted"


def _stopped_compare(
    scenario: Path, out: Path, monkeypatch: pytest.MonkeyPatch, stop_at: int
) -> int:
    """``compare`` of balanced and best_skill on seeds 1-3 into ``out`` (holding a previous
    comparison), Ctrl-C after ``stop_at`` runs (KPIs made up, for speed); its exit code."""
    runs: list[str] = []

    def made_up(scenario: object, *, seed: int, policy: str) -> SimpleNamespace:
        if len(runs) == stop_at:
            raise KeyboardInterrupt
        runs.append(policy)
        level = 0.6 + seed / 20 + (0.1 if policy == "best_skill" else 0.0)
        return SimpleNamespace(kpis={"overall": {"service_level": level, "asa_s": 10.0 * seed}})

    monkeypatch.setattr("simulations.compare.simulate", made_up)
    out.mkdir()
    (out / "compare.json").write_text("the previous comparison")
    argv = ["compare", str(scenario), "--policies", "balanced,best_skill", "--seeds", "3"]
    code = main([*argv, "--out", str(out), "--quiet"])
    assert _files(out) == {"compare.json": "the previous comparison"}
    return code


def test_ctrl_c_in_compare_shows_the_seeds_every_policy_finished(
    scenario: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ctrl-C during a comparison keeps the runs already done: the tables over the seeds
    every policy finished, marked interrupted after k of n runs, exit code 130; nothing
    written (the previous comparison stays whole)."""
    assert _stopped_compare(scenario, tmp_path / "cmp", monkeypatch, stop_at=5) == 130
    printed, err = capsys.readouterr()
    assert err == "interrupted; after 5 of 6 runs, nothing written\n"
    lines = printed.splitlines()
    assert lines[0] == (
        "INTERRUPTED after 5 of 6 runs: the tables cover seeds 1-2 of 1-3, "
        "those every policy finished"
    )
    assert "(mean ± 95 % confidence interval over 2 seeds)" in lines
    row = next(line for line in lines if line.startswith("Service level"))
    assert re.search(r"\b67\.5 %.* 77\.5 %", row), row  # seeds 1 and 2 only
    assert "vs balanced" in printed
    assert "engine, best_skill (seed 1): " in printed
    assert "wrote" not in printed
    assert "INTERRUPTED after k of n runs" in COMPARE_HELP


def test_ctrl_c_in_compare_after_one_whole_seed_names_it(
    scenario: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Interrupted after the first seed: its heading says "seed 1", not "seeds 1"."""
    assert _stopped_compare(scenario, tmp_path / "cmp", monkeypatch, stop_at=3) == 130
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (
        "INTERRUPTED after 3 of 6 runs: the tables cover seed 1 of 1-3, those every policy finished"
    )


def test_ctrl_c_in_compare_before_a_seed_is_whole_says_so(
    scenario: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ctrl-C before every policy finished one seed: nothing to compare, said on one line,
    exit code 130, nothing printed or written."""
    assert _stopped_compare(scenario, tmp_path / "cmp", monkeypatch, stop_at=1) == 130
    printed, err = capsys.readouterr()
    assert printed == ""
    assert err == (
        "interrupted; after 1 of 6 runs, no seed finished under every policy: "
        "nothing to compare, nothing written\n"
    )


def test_replay_of_a_scenario_refuses_a_second_scenario(
    scenario: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--scenario names the team for a trace file; given with a scenario it would be
    ignored, so it is refused."""
    argv = ["replay", str(scenario), "--scenario", str(scenario), "--target", "127.0.0.1:1"]
    assert main([*argv, "--quiet"]) == 2
    _one_error(capsys.readouterr().err, "--scenario: only with a trace file")


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["run", "{scenario}", "--policy", "fastest"], "--policy"),
        (["compare", "{scenario}", "--policies", "balanced;random"], "--policies"),
        (["replay", "{scenario}", "--target", "127.0.0.1:1", "--policy", "fast"], "--policy"),
    ],
)
def test_a_bad_policy_names_the_option_given(
    scenario: Path, capsys: pytest.CaptureFixture[str], argv: list[str], option: str
) -> None:
    """An unknown policy is reported under the option it came in."""
    assert main([a.format(scenario=scenario) for a in argv] + ["--quiet"]) == 2
    _one_error(capsys.readouterr().err, f"{option}: ")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--speed", "0"], "--speed: "),
        (["--speed", "nan"], "--speed: "),
        (["--max-calls", "0"], "--max-calls: "),
        (["--max-seconds", "inf"], "--max-seconds: "),
        (["--drain-seconds", "-1"], "--drain-seconds: "),
        (["--workers", "0"], "--workers: "),
        (["--target", "127.0.0.1:99999"], "--target: "),
        (["--target", "127.0.0.1:0"], "--target: "),
        (["--admin-target", "127.0.0.1:70000"], "--admin-target: "),
        (["--admin-target", "10.0.0.1:5"], "--admin-target: "),
        (["--tenant", "bad tenant!"], "--tenant: 'bad tenant!' must be 1-64 letters"),
        (["--tenant", "t" * 65], "--tenant: "),
    ],
)
def test_replay_options_are_named_as_flags(
    scenario: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    """A bad replay option is a usage error naming its flag (not the field behind it),
    found before any connection is tried and before the output folder exists."""
    out = tmp_path / "replay"
    argv = ["replay", str(scenario), "--target", "127.0.0.1:1", "--out", str(out), "--quiet"]
    assert main([*argv, *extra]) == 2
    _one_error(capsys.readouterr().err, message)
    assert not out.exists()


def test_a_replay_that_cannot_connect_leaves_no_output_folder(
    scenario: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No service answers: exit code 1 and no (empty) output folder left behind."""

    class NeverReady:
        def result(self, timeout: float) -> None:
            raise grpc.FutureTimeoutError

    monkeypatch.setattr("simulations.__main__.grpc.channel_ready_future", lambda _: NeverReady())
    out = tmp_path / "deep" / "replay"
    argv = ["replay", str(scenario), "--target", "127.0.0.1:1", "--out", str(out), "--quiet"]
    assert main(argv) == 1
    assert "no gRPC service answers at 127.0.0.1:1" in capsys.readouterr().err
    assert not (tmp_path / "deep").exists()


def test_the_module_runs_as_a_program(tmp_path: Path) -> None:
    """``python -m simulations`` exits 2 with one error line for a bad scenario."""
    path = tmp_path / "bad.yaml"
    path.write_text("pool: {agents: 0, rate_per_hour: 10, mean_handle_s: 60}\n")
    done = subprocess.run(
        [sys.executable, "-m", "simulations", "run", str(path), "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: scenario")
    assert "pool.agents" in done.stderr


def test_erlang_prints_textbook_figures(capsys: pytest.CaptureFixture[str]) -> None:
    """10 agents, 1 call per 20 s, 180 s handle time (9 Erlang): Erlang C gives
    P(wait) = 66.9 %, 40.2 % answered within 20 s and an ASA of 120 s (2.0 min); with
    patience, Erlang A adds a row with the abandonment."""
    assert main(["erlang", "--rate", "0.05", "--aht", "180", "--agents", "10"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("Erlang C"))
    assert row.split()[2:6] == ["66.9", "%", "40.2", "%"]
    assert "2.0 min" in row
    assert "9.00 Erlang" in out
    argv = ["erlang", "--rate", "180/h", "--aht", "180", "--agents", "10", "--patience", "120"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Erlang A (patience 120 s)" in out


ERLANG = {"--rate": "0.05", "--aht": "180", "--agents": "10"}


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--patience", "nan", "--patience: must be a finite number > 0"),
        ("--patience", "0", "--patience: must be a finite number > 0"),
        ("--patience", "inf", "--patience: must be a finite number > 0"),
        ("--aht", "nan", "--aht: must be a finite number > 0"),
        ("--aht", "inf", "--aht: must be a finite number > 0"),
        ("--aht", "-180", "--aht: must be a finite number > 0"),
        ("--target", "nan", "--target: must be a finite number >= 0"),
        ("--target", "-1", "--target: must be a finite number >= 0"),
        ("--agents", "0", "--agents: must be a whole number in 1..100000"),
        ("--rate", "1e400", "--rate: must be a finite rate > 0"),
        ("--rate", "0", "--rate: must be a finite rate > 0"),
    ],
)
def test_erlang_names_the_one_bad_option(
    capsys: pytest.CaptureFixture[str], option: str, value: str, message: str
) -> None:
    """Each bad number is refused before anything is printed, by its option's name alone,
    with exit code 2 (a NaN patience used to loop for ever, a NaN handle time to print
    figures of NaN)."""
    argv = dict(ERLANG, **{option: value})
    assert main(["erlang", *(part for pair in argv.items() for part in pair)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"error: {message}")
    assert err.count("\n") == 1
    others = {"--rate", "--aht", "--agents", "--target", "--patience"} - {option}
    assert not [name for name in others if name in err]


def test_erlang_a_refuses_undefined_inputs() -> None:
    """The formulas refuse NaN and infinite inputs, and a chain too long to solve (patience
    so long that the queue of an overloaded or nearly full pool reaches millions deep),
    rather than loop or fill the memory."""
    for rate, handle, target in ((math.nan, 180, 20), (0.05, math.inf, 20), (0.05, 180, math.nan)):
        with pytest.raises(ValueError, match="finite"):
            erlang_c(rate, handle, 10, target)
    with pytest.raises(ValueError, match="mean_patience_s"):
        erlang_a(0.05, 180, 10, 20, math.nan)
    with pytest.raises(ValueError, match="too long"):
        erlang_a(0.1, 180, 10, 20, 1e12)
    with pytest.raises(ValueError, match="too long"):  # just under full load: deep all the same
        erlang_a(0.0555555555555, 180, 10, 100_000, 1e12)
    assert erlang_a(0.05, 180, 10, 20, math.inf) == erlang_c(0.05, 180, 10, 20)


def test_rates_parse_per_second_minute_or_hour() -> None:
    """0.05, 3/min and 180/h are the same rate."""
    for text in ("0.05", "0.05/s", "3/min", "180/h"):
        assert parse_rate(text) == pytest.approx(0.05)


def test_trace_writes_the_scenario_calls(scenario: Path, tmp_path: Path) -> None:
    """``trace`` writes exactly ``generate_trace`` for the seed, as CSV or JSON Lines, with
    the mode the umask gives a new file (its hidden stage was made 0600)."""
    expected = generate_trace(load_scenario(scenario), 4)
    mask = os.umask(0o022)
    try:
        for suffix in ("csv", "jsonl"):
            out = tmp_path / f"day.{suffix}"
            assert main(["trace", str(scenario), "--seed", "4", "--out", str(out)]) == 0
            assert read_trace(out) == expected
            assert stat.S_IMODE(out.stat().st_mode) == 0o644
    finally:
        os.umask(mask)


RECORDED = """\
duration_s: 3600
agents: [{id: ana, channels: [voice]}]
arrivals: [{trace: week.csv}]
"""
"""A one-hour scenario whose calls come from a longer recording (``week.csv``)."""


def test_trace_calls_past_the_scenarios_duration_are_named_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A recording longer than the scenario: its calls at or after ``duration_s`` are left
    out, and each command that runs the scenario's arrivals says on stderr how many, of
    which file, and the duration, so a week's recording is not cut to its first hour
    unnoticed; a recording within the duration draws no warning."""
    week = tmp_path / "week.csv"
    arrivals = (10.0, 3599.999, 3600.0, 90_000.0)
    write_trace(week, [TraceCall(at, f"c{n}", Channel.VOICE) for n, at in enumerate(arrivals)])
    path = tmp_path / "recorded.yaml"
    path.write_text(RECORDED)
    out = tmp_path / "day.csv"
    assert main(["trace", str(path), "--seed", "1", "--out", str(out)]) == 0
    printed, err = capsys.readouterr()
    warning = (
        f"warning: {week}: 2 calls arrive at or after duration_s (3600 s) and are left out; "
        "raise duration_s to take them\n"
    )
    assert err == warning
    assert printed == f"wrote 2 calls to {out}\n"
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert capsys.readouterr().err.startswith(warning)
    path.write_text(RECORDED.replace("3600", "90001"))
    assert main(["trace", str(path), "--seed", "1", "--out", str(out)]) == 0
    assert capsys.readouterr().err == ""


def test_t_quantiles_and_intervals() -> None:
    """Student t quantiles match the tables (interpolated past 30) and the interval of
    1..5 is 3 ± 2.776 * sd / sqrt(5)."""
    assert t_quantile_95(1) == 12.706
    assert t_quantile_95(10) == 2.228
    assert t_quantile_95(50) == pytest.approx(2.009, abs=0.001)
    assert t_quantile_95(10**6) == pytest.approx(1.960, abs=0.001)
    s = summarize([1, 2, 3, 4, 5])
    assert s.mean == 3
    assert s.half_width == pytest.approx(2.776 * math.sqrt(2.5) / math.sqrt(5))
    one = summarize([0.7])  # one run: a mean, no interval (a zero-width one would look sure)
    assert (one.n, one.mean) == (1, 0.7)
    assert one.as_dict()["half_width"] is None
    assert one.as_dict()["ci_low"] is None
    assert summarize([None, math.nan]).n == 0


@pytest.fixture
def live() -> Iterator[RunningServer]:
    """A real router over the in-memory store on a free loopback port."""
    running = create_server(Settings(port=0, dispatch_tick_s=0.05), MemoryStore())
    yield running
    running.stop(0)


@pytest.mark.timeout(90)
def test_replay_command_against_a_live_server(
    scenario: Path, tmp_path: Path, live: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """``replay`` of the scenario's trace at x600: exit 0, replay.json with latency per RPC
    and no errors, plus kpis.json, records.csv and the report of the real decisions; stderr
    shows the progress bar, then the KPIs and the outputs under way."""
    out = tmp_path / "replay"
    argv = ["replay", str(scenario), "--target", f"127.0.0.1:{live.port}", "--speed", "600"]
    assert main([*argv, "--max-calls", "40", "--out", str(out)]) == 0
    summary = json.loads((out / "replay.json").read_text())
    assert summary["requests"]["errors"] == 0
    assert summary["calls"]["sent"] == 40
    assert summary["calls"]["answered"] + summary["calls"]["abandoned"] == 40
    assert summary["requests"]["latency_ms"]["Assign"]["n"] == 40
    kpis = json.loads((out / "kpis.json").read_text())
    assert kpis["overall"]["offered"] == 40
    assert_self_contained((out / "report.html").read_text())
    printed, err = capsys.readouterr()
    assert "Assign" in printed
    assert "p99 ms" in printed
    assert "replay" in err
    assert "computing KPIs" in err
    assert f"writing outputs to {out}" in err


@pytest.mark.timeout(90)
def test_a_replay_on_a_full_disk_still_shows_its_figures(
    scenario: Path,
    tmp_path: Path,
    live: RunningServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A replay whose files cannot be written still prints its latencies and calls (exit
    code 2, the error on stderr), as run and compare print their figures."""
    argv = ["replay", str(scenario), "--target", f"127.0.0.1:{live.port}", "--speed", "600"]
    printed = _on_a_full_disk(
        [*argv, "--max-calls", "20"], tmp_path / "replay", monkeypatch, capsys
    )
    assert "p99 ms" in printed
    assert "Assign" in printed
