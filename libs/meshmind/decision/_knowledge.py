"""Knowledge: which actions cleared which anomalies, and the ranking of candidates it implies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Outcomes:
    """How often an action was tried against one kind of anomaly, and how often it cleared it."""

    tried: int = 0
    cleared: int = 0

    @property
    def expected_success(self) -> float:
        """The posterior mean of success under a uniform prior (Laplace's rule of succession)."""
        return (self.cleared + 1) / (self.tried + 2)


@dataclass
class KnowledgeBase:
    """Outcomes per (anomaly kind, action). Kept in the consensus store so every host plans alike;
    :meth:`to_dict` and :meth:`from_dict` are its stored form."""

    outcomes: dict[tuple[str, str], Outcomes] = field(default_factory=dict)

    def record(self, kind: str, action: str, *, cleared: bool) -> None:
        """An executed action and whether the anomaly cleared within its deadline."""
        known = self.outcomes.get((kind, action), Outcomes())
        self.outcomes[(kind, action)] = Outcomes(known.tried + 1, known.cleared + int(cleared))

    def rank(self, kind: str, candidates: Sequence[str]) -> list[str]:
        """``candidates`` best first: by expected success, then in the order given (the
        planner's default preference), so an untried knowledge base keeps that order."""
        order = {action: position for position, action in enumerate(candidates)}
        return sorted(
            candidates,
            key=lambda a: (-self.outcomes.get((kind, a), Outcomes()).expected_success, order[a]),
        )

    def to_dict(self) -> dict[str, dict[str, list[int]]]:
        """``{kind: {action: [tried, cleared]}}``."""
        stored: dict[str, dict[str, list[int]]] = {}
        for (kind, action), outcome in sorted(self.outcomes.items()):
            stored.setdefault(kind, {})[action] = [outcome.tried, outcome.cleared]
        return stored

    @classmethod
    def from_dict(cls, stored: Mapping[str, Mapping[str, Sequence[int]]]) -> KnowledgeBase:
        """The inverse of :meth:`to_dict`; counts are checked."""
        outcomes: dict[tuple[str, str], Outcomes] = {}
        for kind, actions in stored.items():
            for action, counts in actions.items():
                tried, cleared = (int(c) for c in counts)
                if not 0 <= cleared <= tried:
                    raise ValueError(f"{kind}/{action}: {cleared} cleared of {tried} tried")
                outcomes[(kind, action)] = Outcomes(tried, cleared)
        return cls(outcomes)
