"""The base of every payload: a frozen pydantic model that carries its schema version."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Record(BaseModel):
    """A frozen, strict model: the part of a payload nested inside a :class:`Message`."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Message(Record):
    """A payload on the mesh bus; ``v`` is its schema version, checked on every decode."""

    schema_version: ClassVar[int] = 1

    v: int = Field(default=1, description="Schema version of this payload.")

    @model_validator(mode="before")
    @classmethod
    def _default_version(cls, data: Any) -> Any:
        if isinstance(data, dict) and "v" not in data:
            return {**data, "v": cls.schema_version}
        return data


class Empty(Message):
    """A request or reply with no fields."""
