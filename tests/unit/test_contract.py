"""Subject templates: rendering, patterns, matching, and the one-declaration rule."""

from __future__ import annotations

import pytest

from meshmind.bus import Contract, Empty, subject_matches
from meshmind.bus.protocol import CONTRACT, LAB_EVENTS, LabEvent, LinkCut, NodeRef


def test_render_fills_placeholders_with_node_ids() -> None:
    assert LAB_EVENTS.render(node="n-1_a") == "mesh.lab.events.n-1_a"


@pytest.mark.parametrize("bad", ["a.b", "*", ">", "", "a b", "n1\n"])
def test_render_refuses_what_is_not_a_node_id(bad: str) -> None:
    with pytest.raises(ValueError, match="must match"):
        LAB_EVENTS.render(node=bad)


def test_render_needs_every_placeholder() -> None:
    with pytest.raises(ValueError, match="takes parameters"):
        LAB_EVENTS.render()


def test_pattern_leaves_missing_placeholders_as_wildcards() -> None:
    assert LAB_EVENTS.pattern() == LAB_EVENTS.wildcard == "mesh.lab.events.*"
    assert LAB_EVENTS.pattern(node="n2") == "mesh.lab.events.n2"
    with pytest.raises(ValueError, match="no parameters"):
        LAB_EVENTS.pattern(host="n2")


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("mesh.*.x", "mesh.a.x", True),
        ("mesh.*.x", "mesh.a.b.x", False),
        ("mesh.>", "mesh.a.b", True),
        ("mesh.>", "mesh", False),
        ("mesh.a", "mesh.a.b", False),
    ],
)
def test_subject_matching_follows_nats_wildcards(
    pattern: str, subject: str, expected: bool
) -> None:
    assert subject_matches(pattern, subject) is expected


def test_a_subject_is_declared_once() -> None:
    contract = Contract()
    contract.event("mesh.x.{node}", NodeRef, "x")
    with pytest.raises(ValueError, match="declared twice"):
        contract.endpoint("svc", "x", "mesh.x.{other}", Empty, Empty, "same subject shape")


@pytest.mark.parametrize("bad", ["other.x", "mesh..x", "mesh.X", "mesh.{Node}", "mesh.a b"])
def test_subject_templates_live_under_mesh(bad: str) -> None:
    with pytest.raises(ValueError, match="bad subject template"):
        Contract().event(bad, NodeRef, "bad")


def test_model_lookup_by_concrete_subject() -> None:
    assert CONTRACT.model_for("mesh.lab.events.n7") is LabEvent
    assert CONTRACT.model_for("mesh.lab.link.cut") is LinkCut
    assert CONTRACT.model_for("mesh.nothing.here") is None
