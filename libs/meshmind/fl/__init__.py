"""Federated learning, the pure parts: tasks, LoRA adapters, validation, aggregation strategies.

Nothing here touches the network. A :class:`Task` (found by name with :func:`create_task`)
builds a LoRA-adapted model, yields a host's local data, trains and evaluates; the built-in
tasks keep LoRA ``A`` frozen so that averaging ``B`` is the exact mean of the adapters (see
:mod:`meshmind.fl._lora`). Updates are checked with :func:`validate_update`, combined by a
:class:`Strategy`, or buffered asynchronously by :class:`FedBuff` with link-quality and
staleness weights, and travel as safetensors bytes with a SHA-256 digest.
"""

from meshmind.fl._adapter import (
    AdapterBlob,
    AdapterCorrupt,
    decode_adapter,
    encode_adapter,
    inline_adapter,
)
from meshmind.fl._buffered import Aggregation, Contribution, FedBuff
from meshmind.fl._demo_text import DEMO_LABELS, demo_examples, demo_share, write_demo_data
from meshmind.fl._digits import DigitsTask
from meshmind.fl._lora import (
    AdapterSize,
    LoraAggregate,
    Refactored,
    adapter_size,
    aggregate_lora,
    freeze_lora_a,
    lora_layers,
    mean_delta,
    refactor,
)
from meshmind.fl._minilm import MiniLMTextTask
from meshmind.fl._params import (
    Params,
    l2_norm,
    load_trainable,
    trainable_params,
    weighted_mean,
)
from meshmind.fl._partition import dirichlet_partition
from meshmind.fl._rounds import (
    STRATEGIES,
    Received,
    RoundOutcome,
    aggregate_round,
    fitted,
    make_strategy,
    shares,
)
from meshmind.fl._session import TaskSession, task_options
from meshmind.fl._strategies import FedAdam, FedAvg, FedProx, Krum, Strategy, TrimmedMean
from meshmind.fl._task import (
    Examples,
    LocalData,
    Task,
    TrainResult,
    create_task,
    register_task,
    task_names,
)
from meshmind.fl._text_data import TextExample, is_held_out, read_text_examples
from meshmind.fl._validation import UpdateRejected, validate_update
from meshmind.fl._weighting import Update, aggregation_weight, link_factor, staleness_discount

register_task(DigitsTask.name, DigitsTask)
register_task(MiniLMTextTask.name, MiniLMTextTask)

__all__ = [
    "DEMO_LABELS",
    "STRATEGIES",
    "AdapterBlob",
    "AdapterCorrupt",
    "AdapterSize",
    "Aggregation",
    "Contribution",
    "DigitsTask",
    "Examples",
    "FedAdam",
    "FedAvg",
    "FedBuff",
    "FedProx",
    "Krum",
    "LocalData",
    "LoraAggregate",
    "MiniLMTextTask",
    "Params",
    "Received",
    "Refactored",
    "RoundOutcome",
    "Strategy",
    "Task",
    "TaskSession",
    "TextExample",
    "TrainResult",
    "TrimmedMean",
    "Update",
    "UpdateRejected",
    "adapter_size",
    "aggregate_lora",
    "aggregate_round",
    "aggregation_weight",
    "create_task",
    "decode_adapter",
    "demo_examples",
    "demo_share",
    "dirichlet_partition",
    "encode_adapter",
    "fitted",
    "freeze_lora_a",
    "inline_adapter",
    "is_held_out",
    "l2_norm",
    "link_factor",
    "load_trainable",
    "lora_layers",
    "make_strategy",
    "mean_delta",
    "read_text_examples",
    "refactor",
    "register_task",
    "shares",
    "staleness_discount",
    "task_names",
    "task_options",
    "trainable_params",
    "validate_update",
    "weighted_mean",
    "write_demo_data",
]
