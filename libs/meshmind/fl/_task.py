"""The task plugin interface and the registry that finds tasks by name."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from peft import LoraConfig
from torch import nn

from meshmind.fl._params import Params


@dataclass(frozen=True)
class Examples:
    """Labelled examples as tensors: model inputs by keyword, and integer class labels."""

    inputs: Mapping[str, torch.Tensor]
    labels: torch.Tensor

    def __post_init__(self) -> None:
        for name, tensor in self.inputs.items():
            if tensor.shape[0] != self.labels.shape[0]:
                raise ValueError(f"input {name!r} has {tensor.shape[0]} rows, labels {len(self)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Examples]:
        """The examples in shuffled batches of at most ``batch_size``."""
        order = torch.randperm(len(self), generator=generator)
        for start in range(0, len(self), batch_size):
            rows = order[start : start + batch_size]
            yield self.select(rows)

    def select(self, rows: torch.Tensor) -> Examples:
        """The examples at the given row indices."""
        return Examples({k: v[rows] for k, v in self.inputs.items()}, self.labels[rows])


@dataclass(frozen=True)
class LocalData:
    """A host's data for a task: what it trains on and what it evaluates on."""

    train: Examples
    test: Examples


@dataclass(frozen=True)
class TrainResult:
    """What local training reports: how many examples it saw, its mean loss, its metrics."""

    examples: int
    loss: float
    metrics: dict[str, float] = field(default_factory=dict)


class Task(Protocol):
    """A federated task: a model with LoRA adapters, a host's local data, training, metrics.

    Every host builds the same model from the same seed, so the frozen parts (the base network
    and the LoRA ``A`` factors) agree everywhere and only the trainable parameters travel.
    """

    name: str

    def build_model(self, seed: int) -> nn.Module:
        """The base model wrapped with LoRA adapters; only the adapter (and head) trains."""
        ...

    def local_data(self, node_index: int, n_nodes: int, seed: int) -> LocalData:
        """Host ``node_index``'s share of the data among ``n_nodes`` hosts."""
        ...

    def lora_config(self) -> LoraConfig:
        """The peft LoRA configuration the model is adapted with."""
        ...

    def train(
        self,
        model: nn.Module,
        data: Examples,
        epochs: int,
        lr: float,
        proximal_mu: float = 0.0,
        global_params: Params | None = None,
    ) -> TrainResult:
        """Train the model's trainable parameters in place on ``data``.

        With ``proximal_mu > 0`` the loss has FedProx's term ``mu/2 * ||w - w_global||^2``.
        """
        ...

    def evaluate(self, model: nn.Module, data: Examples) -> dict[str, float]:
        """Metrics on ``data``: at least ``accuracy`` and ``loss``."""
        ...


TaskFactory = Callable[..., Task]

_REGISTRY: dict[str, TaskFactory] = {}


def register_task(name: str, factory: TaskFactory) -> None:
    """Make ``factory`` the task called ``name``; a name is registered once."""
    if name in _REGISTRY:
        raise ValueError(f"task {name!r} is already registered")
    _REGISTRY[name] = factory


def create_task(name: str, **options: Any) -> Task:
    """A new instance of the task registered as ``name``, built with ``options``."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(task_names())}") from None
    return factory(**options)


def task_names() -> list[str]:
    """The registered task names, sorted."""
    return sorted(_REGISTRY)
