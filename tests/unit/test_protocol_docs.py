"""The committed protocol document and JSON Schemas match the protocol module."""

from __future__ import annotations

from pathlib import Path

from meshmind.bus.docs import stale_files
from meshmind.bus.protocol import CONTRACT

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_generated_docs_are_up_to_date() -> None:
    stale = stale_files(DOCS)
    assert stale == [], f"run `make docs`: {[str(p.relative_to(DOCS)) for p in stale]}"


def test_every_declared_subject_is_documented() -> None:
    text = (DOCS / "protocol.md").read_text()
    for spec in [*CONTRACT.events, *CONTRACT.endpoints]:
        assert f"`{spec.subject}`" in text


def test_a_changed_model_makes_the_docs_stale(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "protocol.md").write_text("old")
    (tmp_path / "schemas" / "Gone.json").write_text("{}")
    stale = {p.name for p in stale_files(tmp_path)}
    assert {"protocol.md", "Gone.json", "NodeRef.json"} <= stale
