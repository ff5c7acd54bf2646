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
    hw = h * w
    flat = score.reshape(b * n, hw)
    cell = flat.argmax(axis=1)  # (B*N,)
    scores = flat[np.arange(b * n), cell].reshape(b, n)
    row = (cell // w).astype(np.float32).reshape(b, n)
    col = (cell % w).astype(np.float32).reshape(b, n)
    own_idx = np.arange(b * n) * hw + cell  # flat index of each landmark's cell in its own map
    own = np.stack([(col + offset_x.reshape(-1)[own_idx].reshape(b, n)) / w,
                    (row + offset_y.reshape(-1)[own_idx].reshape(b, n)) / h], axis=-1)  # (B, N, 2)
    if not use_neighbors:
        return own.astype(np.float32), scores.astype(np.float32)
    # channel i*C + k of the neighbour maps, read at landmark i's cell
    nb_idx = ((np.arange(b * n) * c)[:, None] + np.arange(c)) * hw + cell[:, None]  # (B*N, C)
    vote_x = (col[..., None] + neighbor_x.reshape(-1)[nb_idx].reshape(b, n, c)) / w
    vote_y = (row[..., None] + neighbor_y.reshape(-1)[nb_idx].reshape(b, n, c)) / h
    votes = np.stack([vote_x, vote_y], axis=-1).reshape(b, n * c, 2)
    candidates = np.concatenate([own, votes], axis=1).astype(np.float32)  # (B, N + N*C, 2)
    a = vote_matrix(nb) if averaging is None else averaging
    points = np.matmul(a, candidates)  # (N, N + N*C) @ (B, N + N*C, 2) -> (B, N, 2)
    return points.astype(np.float32), scores.astype(np.float32)
