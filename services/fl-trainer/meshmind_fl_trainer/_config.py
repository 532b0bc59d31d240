"""fl-trainer's settings, from environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from meshmind.federation import FlHostSettings


class TrainerSettings(FlHostSettings):
    """The host's data (``FL_DATA_DIR``, ``FL_NODE_INDEX``, ``FL_NODES``), when torch loads,
    and a test switch."""

    preload: bool = Field(
        default=True,
        alias="FL_TRAINER_PRELOAD",
        description=(
            "Load torch and the tasks before offering to train, so that no round waits on a"
            " cold start; false loads them with the first round, for hosts that seldom train."
        ),
    )

    fault: Literal["none", "nan", "scale"] = Field(
        default="none",
        alias="FL_TRAINER_FAULT",
        description="For tests only: send NaN or hugely scaled updates, as a faulty host would.",
    )
