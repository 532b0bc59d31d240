"""The local training loop and evaluation shared by the classification tasks."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from meshmind.fl._params import Params
from meshmind.fl._task import Examples, TrainResult

Forward = Callable[[nn.Module, Mapping[str, torch.Tensor]], torch.Tensor]
"""Runs the model on a batch's inputs and returns class logits."""


@contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """Run torch ops on ``threads`` threads inside the block (``None``: leave it as it is).

    Tiny models train fastest on one thread: splitting small matrix products costs more in
    synchronisation than it saves, and far more when other processes share the cores.
    """
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def proximal_term(model: nn.Module, global_params: Params) -> torch.Tensor:
    """FedProx's ``1/2 * ||w - w_global||^2`` over the trainable parameters."""
    total = torch.zeros(())
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            total = total + (parameter - global_params[name]).pow(2).sum()
    return 0.5 * total


def train_classifier(
    model: nn.Module,
    data: Examples,
    forward: Forward,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    proximal_mu: float = 0.0,
    global_params: Params | None = None,
) -> TrainResult:
    """Adam on cross-entropy (plus ``mu`` times the proximal term) over shuffled batches."""
    if epochs < 1 or lr <= 0.0 or batch_size < 1:
        raise ValueError("need epochs >= 1, lr > 0 and batch_size >= 1")
    if proximal_mu < 0.0:
        raise ValueError("proximal_mu must be >= 0")
    if proximal_mu > 0.0 and global_params is None:
        raise ValueError("the proximal term needs the global parameters")
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(trainable, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    loss_sum = 0.0
    correct = 0
    seen = 0
    for _ in range(epochs):
        for batch in data.batches(batch_size, generator):
            optimiser.zero_grad()
            logits = forward(model, batch.inputs)
            loss = F.cross_entropy(logits, batch.labels)
            objective = loss
            if proximal_mu > 0.0 and global_params is not None:
                objective = loss + proximal_mu * proximal_term(model, global_params)
            objective.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            loss_sum += float(loss.detach()) * len(batch)
            correct += int((logits.detach().argmax(dim=1) == batch.labels).sum())
            seen += len(batch)
    model.eval()
    return TrainResult(
        examples=len(data),
        loss=loss_sum / max(seen, 1),
        metrics={"train_accuracy": correct / max(seen, 1)},
    )


def evaluate_classifier(
    model: nn.Module, data: Examples, forward: Forward, *, batch_size: int
) -> dict[str, float]:
    """Accuracy and mean cross-entropy on ``data``."""
    model.eval()
    correct = 0
    loss_sum = 0.0
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            batch = data.select(torch.arange(start, min(start + batch_size, len(data))))
            logits = forward(model, batch.inputs)
            loss_sum += float(F.cross_entropy(logits, batch.labels, reduction="sum"))
            correct += int((logits.argmax(dim=1) == batch.labels).sum())
    total = max(len(data), 1)
    return {"accuracy": correct / total, "loss": loss_sum / total}


class ClassifierTraining:
    """The ``train`` and ``evaluate`` of a classification task, on ``threads`` threads: a task
    says how its model is called (``forward``) and its batch sizes."""

    forward: Forward
    batch_size: int
    eval_batch_size: int = 64
    threads: int | None = 1

    def train(
        self,
        model: nn.Module,
        data: Examples,
        epochs: int,
        lr: float,
        proximal_mu: float = 0.0,
        global_params: Params | None = None,
    ) -> TrainResult:
        with intra_op_threads(self.threads):
            return train_classifier(
                model,
                data,
                type(self).forward,
                epochs=epochs,
                lr=lr,
                batch_size=self.batch_size,
                seed=len(data),
                proximal_mu=proximal_mu,
                global_params=global_params,
            )

    def evaluate(self, model: nn.Module, data: Examples) -> dict[str, float]:
        with intra_op_threads(self.threads):
            return evaluate_classifier(
                model, data, type(self).forward, batch_size=self.eval_batch_size
            )
