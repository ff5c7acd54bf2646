"""PIP decoding with neighbour averaging (NRM): pure NumPy, batched over faces and landmarks."""
from __future__ import annotations

import numpy as np


def vote_matrix(neighbor_indices: np.ndarray) -> np.ndarray:
    """(N, N + N*C) matrix that averages each landmark's own prediction with the votes it gets.

    Column m < N is landmark m's own prediction; column N + i*C + k is the vote landmark i casts
    for its k-th neighbour ``neighbor_indices[i, k]``.
    """
    nb = np.asarray(neighbor_indices, dtype=np.int64)
    n, c = nb.shape
    target = np.concatenate([np.arange(n), nb.reshape(-1)])
    a = np.zeros((n, n + n * c), dtype=np.float64)
    a[target, np.arange(n + n * c)] = 1.0
    a /= a.sum(axis=1, keepdims=True)
    return a.astype(np.float32)


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
    """Decode PIPNet head outputs into normalised landmarks.

    Shapes: score/offset_x/offset_y (B, N, H, W); neighbor_x/neighbor_y (B, N*C, H, W) with
    channel ``i*C + k`` holding landmark i's vote for its k-th neighbour.
    Returns ``(points, scores)``: points (B, N, 2) in [0, 1] units of the crop (0 = left edge of
    the crop, 1 = right edge), scores (B, N) = the score map's value at the chosen cell.
    """
    b, n, h, w = score.shape
    nb = np.asarray(neighbor_indices)
    c = nb.shape[1]
    flat = score.reshape(b, n, h * w)
    cell = flat.argmax(axis=2)  # (B, N)
    scores = np.take_along_axis(flat, cell[..., None], axis=2)[..., 0]
    row = (cell // w).astype(np.float32)
    col = (cell % w).astype(np.float32)

    def at_cell(t: np.ndarray, k: int) -> np.ndarray:
        # value of map t (B, N*k, H, W) at each landmark's own cell -> (B, N, k)
        t = t.reshape(b, n, k, h * w)
        return np.take_along_axis(t, cell[:, :, None, None].repeat(k, axis=2), axis=3)[..., 0]

    own_x = (col + at_cell(offset_x, 1)[..., 0]) / w
    own_y = (row + at_cell(offset_y, 1)[..., 0]) / h
    own = np.stack([own_x, own_y], axis=-1)  # (B, N, 2)
    if not use_neighbors:
        return own.astype(np.float32), scores.astype(np.float32)
    vote_x = (col[..., None] + at_cell(neighbor_x, c)) / w  # (B, N, C)
    vote_y = (row[..., None] + at_cell(neighbor_y, c)) / h
    votes = np.stack([vote_x, vote_y], axis=-1).reshape(b, n * c, 2)
    candidates = np.concatenate([own, votes], axis=1)  # (B, N + N*C, 2)
    a = vote_matrix(nb) if averaging is None else averaging
    points = np.einsum("nm,bmd->bnd", a, candidates.astype(np.float32))
    return points.astype(np.float32), scores.astype(np.float32)
