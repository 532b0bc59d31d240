"""The decision logic without a network: analysis, knowledge that learns, planning and judging."""

from __future__ import annotations

import pytest

from meshmind.decision import (
    AnalysisRules,
    Anomaly,
    KnowledgeBase,
    Plan,
    Situation,
    judge,
    plan,
)

HOSTS = ("n1", "n2", "n3", "n4", "n5")


def situation(node: str, *, voters: tuple[str, ...] = ()) -> Situation:
    view = Situation(node, voters=frozenset(voters))
    for host in HOSTS:
        view.peer_joined(host, started_at=1000.0 + int(host[1:]))
    return view


def test_every_host_derives_the_same_key_for_the_same_departure() -> None:
    seen_by_n1 = situation("n1").peer_left("n4", 1004.0, at=2000.0)
    seen_by_n2 = situation("n2").peer_left("n4", 1004.0, at=2000.7)

    assert seen_by_n1.key == seen_by_n2.key == "host-gone/n4/1004.000000"
    assert seen_by_n1.evidence[0].observer == "n1"


def test_a_host_that_returns_and_leaves_again_is_a_new_anomaly() -> None:
    view = situation("n1")
    first = view.peer_left("n4", 1004.0, at=2000.0)
    view.peer_joined("n4", 2100.0)
    second = view.peer_left("n4", 2100.0, at=2200.0)

    assert first.key != second.key


def test_a_degraded_link_at_a_voter_is_also_a_voter_anomaly() -> None:
    view = situation("n3", voters=("n1", "n2", "n3"))

    found = view.link_changed("n1", "n5", "degraded", at=50.0)

    assert [a.kind for a in found] == ["link-degraded", "voter-bad-link"]
    assert {a.subject for a in found} == {"n1.n5"}
    assert view.link_changed("n4", "n5", "degraded", at=51.0)[0].kind == "link-degraded"
    assert len(view.link_changed("n4", "n5", "degraded", at=51.0)) == 1
    assert view.link_changed("n1", "n5", "good", at=52.0) == []


def test_a_partition_is_suspected_once_when_most_links_of_a_host_go_down() -> None:
    view = situation("n1")

    kinds = [
        [a.kind for a in view.link_changed("n1", t, "down", at=10.0 + i)]
        for i, t in enumerate(("n2", "n3", "n4", "n5"))
    ]

    assert kinds == [
        ["link-down"],
        ["link-down"],
        ["link-down", "partition-suspected"],
        ["link-down"],
    ]
    for target in ("n2", "n3", "n4", "n5"):
        view.link_changed("n1", target, "good", at=20.0)
    again = view.link_changed("n1", "n2", "down", at=30.0)
    assert [a.kind for a in again] == ["link-down"]


def test_overload_must_last_before_it_is_an_anomaly() -> None:
    view = Situation("n1", rules=AnalysisRules(overload_pct=90, overload_for_s=30))

    assert view.load("n2", 95, at=0.0) is None
    assert view.load("n2", 96, at=20.0) is None
    assert view.load("n2", 50, at=25.0) is None  # it recovered: the clock starts again
    assert view.load("n2", 95, at=30.0) is None
    overloaded = view.load("n2", 95, at=61.0)
    assert overloaded is not None
    assert overloaded.key == "host-overloaded/n2/30.000000"


def test_a_trainer_is_failing_after_repeated_failures_within_the_window() -> None:
    view = Situation("n1", rules=AnalysisRules(trainer_failures=3, trainer_window_s=100))

    assert view.trainer_failed("n2", 0.0) is None
    assert view.trainer_failed("n2", 150.0) is None  # the first one fell out of the window
    assert view.trainer_failed("n2", 160.0) is None
    failing = view.trainer_failed("n2", 170.0)
    assert failing is not None
    assert len(failing.evidence) == 3


def test_knowledge_changes_the_ranking_as_outcomes_come_in() -> None:
    knowledge = KnowledgeBase()
    gone = situation("n1").peer_left("n3", 1003.0, at=5.0)
    assert plan(gone, knowledge).action == "restart-services"

    for _ in range(3):
        knowledge.record("host-gone", "restart-services", cleared=False)
    knowledge.record("host-gone", "wait", cleared=True)

    assert plan(gone, knowledge).ranking == ("wait", "restart-services")
    assert plan(situation("n1").peer_left("n3", 1003.0, at=5.0), KnowledgeBase()).action == (
        "restart-services"
    )


def test_knowledge_survives_its_stored_form_and_refuses_impossible_counts() -> None:
    knowledge = KnowledgeBase()
    knowledge.record("link-down", "demote-voter", cleared=True)
    knowledge.record("link-down", "demote-voter", cleared=False)

    assert KnowledgeBase.from_dict(knowledge.to_dict()) == knowledge
    with pytest.raises(ValueError, match="3 cleared of 2 tried"):
        KnowledgeBase.from_dict({"link-down": {"wait": [2, 3]}})


def test_a_host_alone_in_its_view_cannot_get_a_healthy_peer_restarted() -> None:
    cut_off = situation("n1")
    for target in ("n2", "n3", "n4", "n5"):
        cut_off.link_changed("n1", target, "down", at=10.0)
    proposal = plan(Anomaly("host-gone", "n2", "1002.000000"), KnowledgeBase())
    healthy = situation("n3")
    healthy.link_changed("n3", "n2", "good", at=10.0)

    vote = judge(proposal, healthy)

    assert not vote.approve
    assert "does not hold" in vote.reason


def test_a_peer_approves_a_restart_it_has_evidence_for() -> None:
    witness = situation("n3")
    gone = witness.peer_left("n2", 1002.0, at=10.0)

    vote = judge(plan(gone, KnowledgeBase()), witness)

    assert vote.approve
    assert plan(gone, KnowledgeBase()).target == "n2"


def test_an_action_on_a_host_that_the_voter_sees_healthy_is_refused() -> None:
    witness = situation("n3")
    witness.link_changed("n1", "n2", "down", at=10.0)
    bad_link = Anomaly("link-down", "n1.n2", "10.000000")
    restart = Plan(bad_link, "restart-services", "n2", ("restart-services",))

    assert not judge(restart, witness).approve
    assert judge(plan(bad_link, KnowledgeBase()), witness).approve  # move leadership: fine


def test_excluding_a_trainer_is_approved_only_by_a_voter_that_saw_its_updates_refused() -> None:
    witness = situation("n3")
    found = [witness.trainer_failed("n5", at, "n1 refused the update of n5") for at in (1, 2, 3)]
    failing = found[-1]
    assert found[:2] == [None, None]
    assert failing is not None
    proposal = plan(failing, KnowledgeBase())
    assert (proposal.action, proposal.target) == ("exclude-trainer", "n5")

    assert judge(proposal, witness).approve
    assert not judge(proposal, situation("n4")).approve  # no refusal seen: n5 is healthy there
    witness.trainer_recovered("n5")
    assert not judge(proposal, witness).approve
