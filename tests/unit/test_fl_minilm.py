"""The MiniLM text task: the shipped model loads offline, trains a step, its adapter is small."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from meshmind.fl import (
    MiniLMTextTask,
    Params,
    adapter_size,
    decode_adapter,
    encode_adapter,
    load_trainable,
    trainable_params,
    write_demo_data,
)

pytestmark = pytest.mark.minilm


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> MiniLMTextTask:
    data_dir = tmp_path_factory.mktemp("minilm-data")
    write_demo_data(data_dir, node_index=0, n_nodes=2, seed=0)
    return MiniLMTextTask(data_dir=data_dir)


@pytest.fixture(scope="module")
def model(task: MiniLMTextTask) -> nn.Module:
    return task.build_model(seed=5)


def all_params(model: nn.Module) -> Params:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_one_local_step_trains_only_the_adapter_and_head(
    task: MiniLMTextTask, model: nn.Module
) -> None:
    data = task.local_data(0, 2, seed=0)
    assert len(data.train) > 0
    assert len(data.test) > 0
    batch = data.train.select(torch.arange(min(8, len(data.train))))
    before = all_params(model)
    result = task.train(model, batch, epochs=1, lr=1e-3)
    assert result.examples == len(batch)
    assert math.isfinite(result.loss)
    after = all_params(model)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == set(trainable_params(model))
    assert any(".lora_B." in name for name in changed)
    assert any("classifier" in name for name in changed)
    assert not any(".lora_A." in name for name in changed)
    metrics = task.evaluate(model, data.test)
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert math.isfinite(metrics["loss"])


def test_the_adapter_is_a_small_fraction_of_the_model(model: nn.Module) -> None:
    size = adapter_size(model)
    # all-MiniLM-L6-v2 has about 22.7 million float32 parameters.
    assert 85e6 < size.model_bytes < 95e6
    assert size.adapter_bytes < 0.005 * size.model_bytes
    blob = encode_adapter(trainable_params(model))
    assert len(blob.data) < size.adapter_bytes + 16 * 1024
    print(f"minilm adapter {size.adapter_bytes} B, model {size.model_bytes} B")


def test_an_adapter_sent_as_bytes_reproduces_the_model(
    task: MiniLMTextTask, model: nn.Module
) -> None:
    blob = encode_adapter(trainable_params(model))
    other = task.build_model(seed=5)
    load_trainable(other, decode_adapter(blob.data, blob.sha256))
    sample = task.local_data(0, 2, seed=0).test
    with torch.no_grad():
        expected = model(**sample.inputs).logits
        actual = other(**sample.inputs).logits
    assert torch.allclose(expected, actual, atol=1e-6)


def test_labels_outside_the_task_are_refused(task: MiniLMTextTask, tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text('{"text": "a cat sat", "label": "pets"}\n')
    with pytest.raises(ValueError, match=r"labels \['pets'\] are not among"):
        MiniLMTextTask(data_dir=tmp_path).local_data(0, 1, seed=0)
