"""docs/pipeline.md is generated from the declarations and must not be stale."""

from __future__ import annotations

from pathlib import Path

from flows.docgen import render_pipeline_doc
from flows.tables import PIPELINE

DOC = Path(__file__).resolve().parents[2] / "docs" / "pipeline.md"


def test_pipeline_doc_is_up_to_date() -> None:
    assert DOC.read_text() == render_pipeline_doc(), "docs/pipeline.md is stale: run `make docs`"


def test_pipeline_doc_names_every_table() -> None:
    text = render_pipeline_doc()
    for t in PIPELINE:
        assert f"### {t.number}. `{t.name}`" in text
