"""PIP decoding in torch (the reference the SDK's NumPy decoder is checked against)."""

from __future__ import annotations

import torch


def decode(outputs: tuple[torch.Tensor, ...], neighbors: torch.Tensor, use_neighbors: bool = True) -> torch.Tensor:
    """Head outputs -> normalised landmarks (B, N, 2), own prediction averaged with neighbour votes."""
    score, ox, oy, nx, ny = (o.float() for o in outputs[:5])
    b, n, h, w = score.shape
    c = neighbors.shape[1]
    idx = score.reshape(b, n, -1).argmax(-1)  # (B, N)
    col, row = (idx % w).float(), torch.div(idx, w, rounding_mode="floor").float()

    def at(t: torch.Tensor, k: int) -> torch.Tensor:
        t = t.reshape(b, n, k, h * w)
        return torch.gather(t, 3, idx[:, :, None, None].expand(b, n, k, 1))[..., 0]

    own = torch.stack([(col + at(ox, 1)[..., 0]) / w, (row + at(oy, 1)[..., 0]) / h], -1)
    if not use_neighbors:
        return own
    votes = torch.stack([(col[..., None] + at(nx, c)) / w, (row[..., None] + at(ny, c)) / h], -1)  # (B,N,C,2)
    total = own.clone()
    count = torch.ones(b, n, 1, device=own.device)
    target = neighbors.reshape(-1).to(own.device)
    total.index_add_(1, target, votes.reshape(b, n * c, 2))
    count.index_add_(1, target, torch.ones(b, n * c, 1, device=own.device))
    return total / count


def nme(pred: torch.Tensor, gt: torch.Tensor, norm: tuple[int, int] | None) -> torch.Tensor:
    """Per-sample NME (B,): mean point error / distance between the norm points (or, if None,
    sqrt of the ground-truth box area)."""
    err = (pred - gt).norm(dim=-1).mean(-1)
    if norm is None:
        wh = gt.amax(1) - gt.amin(1)
        d = (wh[:, 0] * wh[:, 1]).sqrt()
    else:
        d = (gt[:, norm[0]] - gt[:, norm[1]]).norm(dim=-1)
    return err / d
