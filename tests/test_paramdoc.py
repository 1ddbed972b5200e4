"""docs/parameters.md is generated from the parameter table and must stay so."""

from __future__ import annotations

from pathlib import Path

from pymaster.commands import paramdoc

DOC = Path(__file__).resolve().parents[1] / "docs" / "parameters.md"


def test_docs_parameters_md_is_up_to_date():
    assert DOC.read_text() == paramdoc.render(), \
        "docs/parameters.md is stale: run .venv/bin/python -m pymaster.commands.paramdoc > docs/parameters.md"
