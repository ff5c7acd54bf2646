"""PIPNet targets and loss: score-map MSE (x10) + L1 on own and neighbour offsets at the
ground-truth cell; coarse score maps for self-training with curriculum (STC); distillation from a
bigger model."""

from __future__ import annotations

import torch


def cells(points: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised points (B, N, 2) -> cell index (B, N) (row * grid + col) and (col, row) (B, N, 2),
    clamped to the map like the paper's code."""
    cr = torch.floor(points * grid).long().clamp(0, grid - 1)
    return cr[..., 1] * grid + cr[..., 0], cr


def make_targets(points: torch.Tensor, grid: int, neighbors: torch.Tensor) -> dict[str, torch.Tensor]:
    """score (B, N, G*G) one-hot at the ground-truth cell; offset (B, N, 2) of each landmark from
    its cell's top-left corner in cell units; neighbor (B, N, C, 2) = neighbour j's position
    relative to landmark i's cell (C = neighbours per landmark)."""
    b, n, _ = points.shape
    idx, cr = cells(points, grid)
    score = torch.zeros(b, n, grid * grid, device=points.device)
    score.scatter_(2, idx.unsqueeze(-1), 1.0)
    scaled = points * grid
    offset = scaled - cr.float()
    nb = scaled[:, neighbors] - cr.float().unsqueeze(2)  # (B, N, C, 2)
    return {"index": idx, "score": score, "offset": offset, "neighbor": nb}


def coarse_score(points: torch.Tensor, grid: int) -> torch.Tensor:
    """One-hot (B, N, grid*grid) at the coarse cell of each point (STC curriculum targets)."""
    idx, _ = cells(points, grid)
    t = torch.zeros(*points.shape[:2], grid * grid, device=points.device)
    return t.scatter_(2, idx.unsqueeze(-1), 1.0)


def gather_cell(t: torch.Tensor, idx: torch.Tensor, k: int) -> torch.Tensor:
    """Values of head t (B, N*k, H, W) at each landmark's cell idx (B, N) -> (B, N, k)."""
    b, nk, h, w = t.shape
    n = idx.shape[1]
    t = t.reshape(b, n, k, h * w)
    return torch.gather(t, 3, idx[:, :, None, None].expand(b, n, k, 1))[..., 0]


def pip_loss(
    outputs: tuple[torch.Tensor, ...],
    targets: dict[str, torch.Tensor],
    num_neighbors: int,
    score_weight: float = 10.0,
    offset_weight: float = 1.0,
    sample_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The paper's loss and its detached parts (tensors, so that a training step need not wait
    for the device). sample_weight (B,) masks samples (e.g. pseudo-labels before the full-map
    stage of STC)."""
    score, ox, oy, nx, ny = (o.float() for o in outputs[:5])
    b, n, h, w = score.shape
    wgt = torch.ones(b, device=score.device) if sample_weight is None else sample_weight
    denom = wgt.sum().clamp(min=1.0)
    l_score = ((score.reshape(b, n, -1) - targets["score"]) ** 2).mean(dim=(1, 2))
    idx = targets["index"]
    own = torch.stack([gather_cell(ox, idx, 1)[..., 0], gather_cell(oy, idx, 1)[..., 0]], -1)
    l_off = (own - targets["offset"]).abs().mean(dim=(1, 2))
    nb = torch.stack([gather_cell(nx, idx, num_neighbors), gather_cell(ny, idx, num_neighbors)], -1)
    l_nb = (nb - targets["neighbor"]).abs().mean(dim=(1, 2, 3))
    parts = {
        "score": (l_score * wgt).sum() / denom,
        "offset": (l_off * wgt).sum() / denom,
        "neighbor": (l_nb * wgt).sum() / denom,
    }
    total = score_weight * parts["score"] + offset_weight * (parts["offset"] + parts["neighbor"])
    return total, {k: v.detach() for k, v in parts.items()}


def visibility_cells(kind: str, score: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Where training reads the visibility head, (B, N): each landmark's ground-truth cell truth
    ("truth"), or its argmax cell on the score maps score (B, N, H, W) ("decoded"), where the
    shipped graph reads it: a hidden point's argmax often lands elsewhere."""
    if kind == "truth":
        return truth
    if kind == "decoded":
        return score.detach().flatten(2).argmax(-1)
    raise ValueError(f'visibility_cell must be "truth" or "decoded", not {kind!r}')


def visibility_loss(
    logits: torch.Tensor, index: torch.Tensor, visible: torch.Tensor, sample_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Binary cross-entropy of the visibility head (B, N, H, W) read at each landmark's cell
    index (B, N) against its label visible (B, N) in {0, 1}."""
    at_cell = gather_cell(logits.float(), index, 1)[..., 0]
    per_face = torch.nn.functional.binary_cross_entropy_with_logits(at_cell, visible, reduction="none").mean(1)
    if sample_weight is None:
        return per_face.mean()
    return (per_face * sample_weight).sum() / sample_weight.sum().clamp(min=1.0)


def distill_loss(
    student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...], num_neighbors: int, score_weight: float = 10.0
) -> torch.Tensor:
    """Knowledge distillation between models with the same map grid: MSE to the teacher's score
    maps on every cell, L1 to its own and neighbour offsets at its argmax cells (where it decodes)."""
    s_score, t_score = student[0].float(), teacher[0].float()
    b, n = s_score.shape[:2]
    idx = t_score.reshape(b, n, -1).argmax(-1)  # (B, N)
    # own x/y and neighbour x/y heads; each pair counts like one L1 term of pip_loss
    l_offsets = (
        sum(
            (gather_cell(s.float(), idx, k) - gather_cell(t.float(), idx, k)).abs().mean()
            for s, t, k in zip(student[1:5], teacher[1:5], (1, 1, num_neighbors, num_neighbors))
        )
        / 2
    )
    return score_weight * ((s_score - t_score) ** 2).mean() + l_offsets


def coarse_loss(
    coarse_maps: dict[int, torch.Tensor], points: torch.Tensor, weight: torch.Tensor, score_weight: float = 10.0
) -> torch.Tensor:
    """MSE of each coarse score map (B, N, g, g) against the one-hot coarse cell, per-sample weighted."""
    total = points.new_zeros(())
    for g, m in coarse_maps.items():
        b, n = m.shape[:2]
        err = ((m.float().reshape(b, n, -1) - coarse_score(points, g)) ** 2).mean(dim=(1, 2))
        total = total + score_weight * (err * weight).sum() / weight.sum().clamp(min=1.0)
    return total
