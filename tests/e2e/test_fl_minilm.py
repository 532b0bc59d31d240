"""The MiniLM task trains a federated round on the lab; its adapter is a sliver of the model."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshmind.bus.protocol import FlJobSpec
from meshmind.fl import MiniLMTextTask, adapter_size
from meshmind.lab import node_names
from tests.kit.fl import fl_lab, start_job, wait_until_done

NODES = node_names(3)
"""Three hosts: each loads the whole transformer, and they share two cores here."""


@pytest.mark.minilm
@pytest.mark.timeout(1800)
async def test_one_federated_minilm_round_moves_adapters_not_models(tmp_path: Path) -> None:
    spec = FlJobSpec(
        job_id="minilm",
        task="minilm-text",
        rounds=1,
        participants=len(NODES),
        min_updates=2,
        deadline_s=900.0,
        epochs=1,
        lr=5e-3,
        seed=0,
    )
    async with fl_lab(tmp_path / "lab", NODES) as (_, bus):
        await start_job(bus, "n1", spec, within=600)
        done = await wait_until_done(bus, "minilm", NODES, within=1200)

    assert done.state == "done"
    (metrics,) = done.history
    assert len(metrics.participants) >= 2
    assert not metrics.rejected
    assert 0.0 <= metrics.accuracy <= 1.0
    per_update = metrics.bytes_up / len(metrics.participants)
    sizes = adapter_size(MiniLMTextTask().build_model(0))
    assert per_update == pytest.approx(sizes.adapter_bytes, rel=0.05)  # safetensors header
    assert per_update < 0.01 * sizes.model_bytes
