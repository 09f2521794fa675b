"""simulations/README.md is the ops team's reference: it must name every scenario field, trace
column, output column and subcommand the code knows, so the two cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from simulations import kpis
from simulations.cli import build_parser
from simulations.kpis import OPTIONAL_RECORD_COLUMNS, RECORD_COLUMNS
from simulations.scenario import TOP_FIELDS
from simulations.trace import COLUMNS, OPTIONAL_COLUMNS

ROOT = Path(__file__).parents[2]
README = (ROOT / "simulations" / "README.md").read_text()


@pytest.mark.parametrize(
    "name",
    [*TOP_FIELDS, *COLUMNS, *OPTIONAL_COLUMNS, *RECORD_COLUMNS, *OPTIONAL_RECORD_COLUMNS],
    ids=str,
)
def test_every_field_and_column_is_documented(name: str) -> None:
    assert re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", README), name


def test_every_subcommand_and_shipped_scenario_is_documented() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert commands
    for command in commands:
        assert f"`{command} " in README or f"`{command}`" in README, command
    for scenario in (ROOT / "simulations" / "scenarios").glob("*.yaml"):
        assert f"`{scenario.name}`" in README, scenario.name


def test_every_relative_link_resolves() -> None:
    for target in re.findall(r"\]\((?!https?:)([^)#]+)", README):
        assert (ROOT / "simulations" / target).resolve().exists(), target


def test_the_report_is_described_as_it_is_made() -> None:
    """report.html carries its charts as inline base64 PNG images (``report.img``), not SVG."""
    assert "SVG" not in README
    assert "base64 PNG" in README


def _flat(text: str) -> str:
    return " ".join(text.replace("`", "").split())


@pytest.mark.parametrize("text", [README, kpis.__doc__ or ""], ids=["README", "kpis"])
def test_records_say_whose_agent_a_call_shows(text: str) -> None:
    """A call answered but still in progress at the end of the run has an answered_s and
    no agent_id: the docs say agent_id, handle_s and end_s are the completing agent's."""
    flat = _flat(text)
    assert re.search(r"agent_id, handle_s and end_s [^.]*those of the agent who completed", flat)
    assert "empty for a call not completed by the end of the run" in flat
