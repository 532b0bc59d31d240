"""Splitting labelled data among hosts: non-IID label skew drawn from a Dirichlet prior."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def dirichlet_partition(
    labels: npt.NDArray[np.int64],
    n_parts: int,
    alpha: float,
    seed: int,
    min_size: int = 1,
) -> list[npt.NDArray[np.int64]]:
    """Row indices for each of ``n_parts`` hosts, each class split by Dirichlet(alpha) shares.

    A small ``alpha`` gives each host a few dominant classes (strong skew); a large one tends
    to an even split. Draws are repeated until every part has at least ``min_size`` rows.
    The result depends only on the arguments.
    """
    if n_parts < 1 or alpha <= 0.0 or min_size * n_parts > len(labels):
        raise ValueError("need n_parts >= 1, alpha > 0 and enough rows for min_size")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    while True:
        parts: list[list[int]] = [[] for _ in range(n_parts)]
        for label in classes:
            rows = np.flatnonzero(labels == label)
            rng.shuffle(rows)
            shares = rng.dirichlet(np.full(n_parts, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(rows)).astype(np.int64)
            for part, chunk in zip(parts, np.split(rows, cuts), strict=True):
                part.extend(int(row) for row in chunk)
        if min(len(part) for part in parts) >= min_size:
            return [np.sort(np.asarray(part, dtype=np.int64)) for part in parts]
