"""A batch's reply kept within the bus's payload: values past a budget are left out."""

from __future__ import annotations

from collections.abc import Sequence

from meshmind.bus.protocol import MAX_BATCH_REPLY_VALUE_BYTES, KvBatchResult, KvWrite


def batch_reply(
    outcomes: Sequence[KvWrite], budget: int = MAX_BATCH_REPLY_VALUE_BYTES
) -> KvBatchResult:
    """The outcomes in order, each value kept while the values so far fit ``budget`` bytes:
    a batch of cases that lose to large values would otherwise answer with more than a
    message may carry, after its writes were committed."""
    kept: list[KvWrite] = []
    used = 0
    for outcome in outcomes:
        size = len(outcome.value.encode()) if outcome.value is not None else 0
        if used + size > budget:
            outcome = outcome.model_copy(update={"value": None, "value_omitted": True})
        else:
            used += size
        kept.append(outcome)
    return KvBatchResult(writes=kept)
