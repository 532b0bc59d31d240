"""The ``digits`` task: scikit-learn's handwritten digits, a small MLP, LoRA on its layers.

The 1,797 8x8 images ship inside scikit-learn. A fixed split holds out a test set and a small
"public" slice; the base network is pre-trained centrally on the public slice only (quickly,
deterministically, once per process), so it is a weak starting point that federated LoRA
adaptation on the hosts' private, label-skewed partitions has to improve.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from sklearn.datasets import load_digits
from torch import nn

from meshmind.fl._lora import freeze_lora_a
from meshmind.fl._partition import dirichlet_partition
from meshmind.fl._task import Examples, LocalData
from meshmind.fl._training import ClassifierTraining, intra_op_threads, train_classifier

_SPLIT_SEED = 20240607
_BASE_SEED = 7
_TEST_SHARE = 0.25
_PUBLIC_ROWS = 120
_BASE_EPOCHS = 15


class DigitsMLP(nn.Module):
    """64 pixels -> two hidden layers -> 10 classes."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.hidden1 = nn.Linear(64, hidden)
        self.hidden2 = nn.Linear(hidden, hidden)
        self.output = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.hidden1(x))
        h = torch.relu(self.hidden2(h))
        logits: torch.Tensor = self.output(h)
        return logits


@dataclass(frozen=True)
class _Split:
    public: Examples
    pool: Examples
    test: Examples


def _forward(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    logits: torch.Tensor = model(x=inputs["x"])
    return logits


@cache
def _split() -> _Split:
    digits = load_digits()
    features = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    labels = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(_SPLIT_SEED))
    n_test = int(len(labels) * _TEST_SHARE)
    everything = Examples({"x": features}, labels)
    return _Split(
        test=everything.select(order[:n_test]),
        public=everything.select(order[n_test : n_test + _PUBLIC_ROWS]),
        pool=everything.select(order[n_test + _PUBLIC_ROWS :]),
    )


@cache
def _base_state() -> dict[str, torch.Tensor]:
    with torch.random.fork_rng():
        torch.manual_seed(_BASE_SEED)
        model = DigitsMLP()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    with intra_op_threads(1):
        train_classifier(
            model,
            _split().public,
            _forward,
            epochs=_BASE_EPOCHS,
            lr=3e-3,
            batch_size=32,
            seed=_BASE_SEED,
        )
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


class DigitsTask(ClassifierTraining):
    """Federated LoRA adaptation of a pre-trained MLP on non-IID shares of the digits."""

    name = "digits"
    forward = staticmethod(_forward)
    eval_batch_size = 256

    def __init__(self, alpha: float = 0.5, rank: int = 8, batch_size: int = 32) -> None:
        self.alpha = alpha
        """Dirichlet concentration of the label skew: smaller is more skewed."""
        self.rank = rank
        self.batch_size = batch_size

    def lora_config(self) -> LoraConfig:
        return LoraConfig(
            r=self.rank,
            lora_alpha=2 * self.rank,
            lora_dropout=0.0,
            target_modules=["hidden1", "hidden2", "output"],
        )

    def base_model(self) -> DigitsMLP:
        """The centrally pre-trained base network, before any adapter."""
        model = DigitsMLP()
        model.load_state_dict(copy.deepcopy(_base_state()))
        return model

    def build_model(self, seed: int) -> nn.Module:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = get_peft_model(self.base_model(), self.lora_config())
        freeze_lora_a(model)
        model.eval()
        return model

    def local_data(self, node_index: int, n_nodes: int, seed: int) -> LocalData:
        if not 0 <= node_index < n_nodes:
            raise ValueError(f"node_index {node_index} is not in [0, {n_nodes})")
        split = _split()
        labels = split.pool.labels.numpy().astype(np.int64)
        parts = dirichlet_partition(labels, n_nodes, self.alpha, seed, min_size=10)
        train = split.pool.select(torch.from_numpy(parts[node_index]))
        return LocalData(train=train, test=split.test)

    def central_data(self) -> LocalData:
        """All the private training rows at once, for a centrally trained reference."""
        split = _split()
        return LocalData(train=split.pool, test=split.test)
