"""A host's hold on one task: its model built once, its local data, training and evaluation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from meshmind.federation import HostData
from meshmind.fl._params import Params, load_trainable, trainable_params
from meshmind.fl._task import LocalData, TrainResult, create_task

SKEWED_TASKS = ("digits",)
"""Tasks that split a packaged data set among the hosts, by a Dirichlet label skew."""


def task_options(task: str, data: HostData, label_skew: float | None = None) -> dict[str, Any]:
    """What ``create_task`` needs besides the name: a text task reads the data directory; a
    task that splits a packaged data set takes the job's label skew, when it sets one."""
    options: dict[str, Any] = {}
    if task == "minilm-text" and data.data_dir is not None:
        options["data_dir"] = data.data_dir
    if label_skew is not None:
        if task not in SKEWED_TASKS:
            raise ValueError(f"label_skew applies to {', '.join(SKEWED_TASKS)}, not {task!r}")
        options["alpha"] = label_skew
    return options


class TaskSession:
    """One task's model on this host, built from the job's seed, reused round after round."""

    def __init__(
        self, task: str, seed: int, data: HostData, label_skew: float | None = None
    ) -> None:
        self.task_name = task
        self.seed = seed
        self.host = data
        self.task = create_task(task, **task_options(task, data, label_skew))
        self.model = self.task.build_model(seed)
        self.initial: Params = trainable_params(self.model)
        self._data: LocalData | None = None

    def data(self) -> LocalData:
        """The host's train and test examples (read once)."""
        if self._data is None:
            self._data = self.task.local_data(self.host.node_index, self.host.nodes, self.seed)
        return self._data

    def evaluate(self, params: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """The task's metrics (accuracy, loss) of ``params`` on the host's test examples."""
        load_trainable(self.model, params)
        return self.task.evaluate(self.model, self.data().test)

    def train(
        self, params: Mapping[str, torch.Tensor], *, epochs: int, lr: float, proximal_mu: float
    ) -> tuple[Params, TrainResult]:
        """Train from ``params`` on the host's own examples; the new parameters and a report."""
        start = {name: tensor.clone() for name, tensor in params.items()}
        load_trainable(self.model, start)
        result = self.task.train(
            self.model,
            self.data().train,
            epochs=epochs,
            lr=lr,
            proximal_mu=proximal_mu,
            global_params=start if proximal_mu > 0.0 else None,
        )
        return trainable_params(self.model), result
