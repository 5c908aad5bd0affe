"""Training history in one format for both frameworks.

PyTorch's ``train.fit`` and the Keras callbacks both produce a :class:`History`, so a
notebook can plot a PyTorch run and a Keras run on the same axes, and a checkpoint can
store the history it resumes from.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from course_utils.atomic import atomic_write_json

__all__ = ["EPOCH_KEYS", "History"]

#: the keys of one epoch record, in display order; missing metrics are NaN
EPOCH_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")


@dataclass
class History:
    """Per-epoch records: ``epoch`` (1-based), ``train_loss``, ``train_acc``, ``val_loss``,
    ``val_acc``, ``lr`` and ``seconds``, plus ``best_epoch`` when a best checkpoint was
    restored and ``stopped_early``."""

    records: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    framework: str = "pytorch"

    def append(self, **record) -> dict:
        row = {k: float("nan") for k in EPOCH_KEYS}
        row.update(record)
        row["epoch"] = int(row["epoch"]) if not _isnan(row["epoch"]) else len(self.records) + 1
        self.records.append(row)
        return row

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: str) -> list[float]:
        """``history["val_acc"]`` -> the column as a list."""
        if key not in EPOCH_KEYS and not any(key in r for r in self.records):
            raise KeyError(f"history has no column {key!r}; columns: {', '.join(EPOCH_KEYS)}")
        return [r.get(key, float("nan")) for r in self.records]

    @property
    def last(self) -> dict:
        if not self.records:
            raise IndexError("history is empty: no epoch has finished")
        return self.records[-1]

    def to_frame(self):
        """The records as a pandas DataFrame indexed by epoch."""
        import pandas as pd

        return pd.DataFrame(self.records).set_index("epoch")

    def to_dict(self) -> dict:
        return {"records": self.records, "best_epoch": self.best_epoch,
                "stopped_early": self.stopped_early, "framework": self.framework}

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(list(d.get("records", [])), d.get("best_epoch"), bool(d.get("stopped_early")),
                   d.get("framework", "pytorch"))

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict(), indent=1)

    @classmethod
    def load(cls, path: str | Path) -> "History":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _isnan(x) -> bool:
    return isinstance(x, float) and math.isnan(x)
