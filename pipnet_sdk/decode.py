"""PIP decoding with neighbour averaging (NRM) in NumPy, the same for every model file format.

A PIPNet predicts, per landmark, a score map over the cells of its grid, an x/y offset within the
cell, and x/y offsets of its C nearest mean-face neighbours. Decoding takes each landmark's
argmax cell and gives (B, N, 1 + C, 2) *candidates* in [0, 1] crop units: candidate 0 is the
landmark's own prediction (cell + own offset), candidate 1 + k is its vote for its k-th
neighbour ``neighbor_indices[i, k]`` (cell + that neighbour's offset). Format-3 files output the
candidates (computed in the graph only at the argmax cells); format-1 files output the head maps
and :func:`candidates_from_maps` reads them here. :func:`merge` then averages, for each
landmark, its own prediction with every vote cast for it.
"""

from __future__ import annotations

import numpy as np


def vote_matrix(neighbor_indices: np.ndarray) -> np.ndarray:
    """(N, N * (1 + C)) matrix that averages each landmark's own prediction with the votes it
    gets, for candidates laid out landmark-major: column i * (1 + C) is landmark i's own
    prediction, column i * (1 + C) + 1 + k its vote for ``neighbor_indices[i, k]``."""
    nb = np.asarray(neighbor_indices, dtype=np.int64)
    n, c = nb.shape
    target = vote_targets(nb)  # who each column is for
    a = np.zeros((n, n * (1 + c)), dtype=np.float64)
    a[target, np.arange(n * (1 + c))] = 1.0
    a /= a.sum(axis=1, keepdims=True)
    return a.astype(np.float32)


def candidates_from_maps(
    score: np.ndarray,
    offset_x: np.ndarray,
    offset_y: np.ndarray,
    neighbor_x: np.ndarray,
    neighbor_y: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Head maps -> candidates (B, N, 1 + C, 2) and scores (B, N) (the score map at the argmax).

    Shapes: score/offset_x/offset_y (B, N, H, W); neighbor_x/neighbor_y (B, N*C, H, W) with
    channel ``i*C + k`` holding landmark i's vote for its k-th neighbour.
    """
    b, n, h, w = score.shape
    c = neighbor_x.shape[1] // n
    flat = score.reshape(b, n, h * w)
    cell = flat.argmax(axis=2)  # (B, N)
    scores = np.take_along_axis(flat, cell[..., None], axis=2)[..., 0]
    col, row = (cell % w).astype(np.float32), (cell // w).astype(np.float32)

    def at_cell(maps: np.ndarray, k: int) -> np.ndarray:  # (B, N*k, H, W) -> (B, N, k) at each landmark's cell
        m = maps.reshape(b, n, k, h * w)
        return np.take_along_axis(m, np.broadcast_to(cell[:, :, None, None], (b, n, k, 1)), axis=3)[..., 0]

    dx = np.concatenate([at_cell(offset_x, 1), at_cell(neighbor_x, c)], axis=2)  # (B, N, 1 + C)
    dy = np.concatenate([at_cell(offset_y, 1), at_cell(neighbor_y, c)], axis=2)
    candidates = np.stack([(col[..., None] + dx) / w, (row[..., None] + dy) / h], axis=-1)
    return candidates.astype(np.float32), scores.astype(np.float32)


def merge(candidates: np.ndarray, averaging: np.ndarray | None, use_neighbors: bool = True) -> np.ndarray:
    """Candidates (B, N, 1 + C, 2) -> points (B, N, 2): with ``use_neighbors`` each landmark's own
    prediction averaged with the votes for it (``averaging`` from :func:`vote_matrix`), else the
    own prediction alone."""
    if not use_neighbors:
        return np.ascontiguousarray(candidates[:, :, 0], dtype=np.float32)
    if averaging is None:
        raise ValueError("merge with use_neighbors needs the averaging matrix (vote_matrix)")
    b, n, k, _ = candidates.shape
    return np.matmul(averaging, candidates.reshape(b, n * k, 2)).astype(np.float32, copy=False)


def vote_targets(neighbor_indices: np.ndarray) -> np.ndarray:
    """(N * (1 + C),) which landmark each candidate is cast for, in the candidates' layout."""
    nb = np.asarray(neighbor_indices, dtype=np.int64)
    return np.concatenate([np.arange(len(nb))[:, None], nb], axis=1).reshape(-1)


def vote_spread(candidates: np.ndarray, points: np.ndarray, averaging: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(B, N) how far, on average, the candidates cast for each landmark (its own prediction and
    its neighbours' votes) lie from its point (B, N, 2), in crop units: where they disagree, the
    point is less certain. ``averaging`` from :func:`vote_matrix`, ``targets`` from
    :func:`vote_targets`."""
    b, n, k, _ = candidates.shape
    gap = candidates.reshape(b, n * k, 2) - points.take(targets, axis=1)
    return np.matmul(np.hypot(gap[..., 0], gap[..., 1]), averaging.T).astype(np.float32, copy=False)


def decode(
    score: np.ndarray,
    offset_x: np.ndarray,
    offset_y: np.ndarray,
    neighbor_x: np.ndarray,
    neighbor_y: np.ndarray,
    neighbor_indices: np.ndarray,
    use_neighbors: bool = True,
    averaging: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Head maps -> points (B, N, 2) in [0, 1] crop units (0 = left/top edge of the crop, 1 =
    right/bottom edge) and scores (B, N)."""
    candidates, scores = candidates_from_maps(score, offset_x, offset_y, neighbor_x, neighbor_y)
    if averaging is None and use_neighbors:
        averaging = vote_matrix(neighbor_indices)
    return merge(candidates, averaging, use_neighbors), scores
