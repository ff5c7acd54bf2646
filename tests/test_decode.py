"""The NumPy decoder (candidates + neighbour merge) against plain loops from the definition, on
random head maps and on a shipped model's real outputs."""

from __future__ import annotations

import numpy as np
import pytest

from pipnet_sdk.decode import decode, merge, vote_matrix


def reference_decode(score, off_x, off_y, nb_x, nb_y, nb_idx, use_neighbors=True):
    """Straight from the definition: each landmark takes its arg-max cell plus its own offset;
    from that same cell it votes for each of its neighbours; a landmark's final position is the
    mean of its own prediction and all the votes it received. Units: fraction of the map."""
    b_, n_, h_, w_ = score.shape
    c_ = nb_idx.shape[1]
    points = np.zeros((b_, n_, 2))
    scores = np.zeros((b_, n_))
    for b in range(b_):
        cells, candidates = [], [[] for _ in range(n_)]
        for i in range(n_):
            best, cell = -np.inf, (0, 0)
            for r in range(h_):
                for c in range(w_):
                    if score[b, i, r, c] > best:
                        best, cell = score[b, i, r, c], (r, c)
            cells.append(cell)
            r, c = cell
            scores[b, i] = best
            candidates[i].append(((c + off_x[b, i, r, c]) / w_, (r + off_y[b, i, r, c]) / h_))
        for i in range(n_):
            r, c = cells[i]
            for k in range(c_):
                j = nb_idx[i, k]
                ch = i * c_ + k
                candidates[j].append(((c + nb_x[b, ch, r, c]) / w_, (r + nb_y[b, ch, r, c]) / h_))
        for j in range(n_):
            use = candidates[j] if use_neighbors else candidates[j][:1]
            points[b, j] = np.mean(use, axis=0)
    return points, scores


def random_heads(seed: int, b: int, n: int, c: int, h: int, w: int, distinct: bool = True):
    rng = np.random.RandomState(seed)
    f = lambda *s: rng.randn(*s).astype(np.float32)  # noqa: E731
    if distinct:  # neighbours are other landmarks, as in real models
        nb = np.stack([rng.choice([j for j in range(n) if j != i], c, replace=False) for i in range(n)])
    else:  # anything goes: self-votes and repeats must be counted like the loop counts them
        nb = rng.randint(0, n, (n, c))
    return (f(b, n, h, w), f(b, n, h, w), f(b, n, h, w), f(b, n * c, h, w), f(b, n * c, h, w)), nb


CASES = [  # seed, B, N, C, H, W, distinct neighbours
    (0, 1, 5, 2, 4, 4, True),
    (1, 3, 68, 10, 8, 8, True),
    (2, 2, 98, 10, 8, 8, True),
    (3, 4, 19, 3, 3, 5, True),
    (4, 2, 1, 1, 2, 2, False),
    (5, 3, 7, 4, 6, 2, False),
    (6, 1, 29, 5, 1, 1, True),
]


@pytest.mark.parametrize("seed, b, n, c, h, w, distinct", CASES)
def test_matches_reference(seed, b, n, c, h, w, distinct) -> None:
    heads, nb = random_heads(seed, b, n, c, h, w, distinct)
    pts, sc = decode(*heads, nb)
    ref_pts, ref_sc = reference_decode(*heads, nb)
    assert pts.shape == (b, n, 2) and sc.shape == (b, n)
    assert pts.dtype == np.float32 and sc.dtype == np.float32
    np.testing.assert_allclose(pts, ref_pts, atol=1e-5, rtol=0)
    np.testing.assert_allclose(sc, ref_sc, atol=1e-6, rtol=0)
    # a precomputed averaging matrix gives the same answer
    np.testing.assert_allclose(decode(*heads, nb, averaging=vote_matrix(nb))[0], pts, atol=1e-6)


@pytest.mark.parametrize("seed, b, n, c, h, w, distinct", CASES[:4])
def test_without_neighbors_is_own_prediction(seed, b, n, c, h, w, distinct) -> None:
    heads, nb = random_heads(seed, b, n, c, h, w, distinct)
    pts, sc = decode(*heads, nb, use_neighbors=False)
    ref_pts, ref_sc = reference_decode(*heads, nb, use_neighbors=False)
    np.testing.assert_allclose(pts, ref_pts, atol=1e-6, rtol=0)
    np.testing.assert_allclose(sc, ref_sc, atol=1e-6, rtol=0)


def _hand_built(vote_error: float = 0.0):
    """Two landmarks on a 4x4 map, in cell units: landmark 0 at (x 2.25, y 1.5) = cell row 1,
    col 2 + offset (0.25, 0.5); landmark 1 at (x 0.3, y 3.6) = cell row 3, col 0 + (0.3, 0.6).
    Each votes for the other with the exact relative offset (landmark 1's x vote for landmark 0
    is off by ``vote_error``)."""
    h = w = 4
    score = np.zeros((1, 2, h, w), np.float32)
    ox, oy, nx, ny = (np.zeros_like(score) for _ in range(4))
    score[0, 0, 1, 2], ox[0, 0, 1, 2], oy[0, 0, 1, 2] = 0.9, 0.25, 0.5
    score[0, 1, 3, 0], ox[0, 1, 3, 0], oy[0, 1, 3, 0] = 0.7, 0.3, 0.6
    nx[0, 0, 1, 2], ny[0, 0, 1, 2] = 0.3 - 2, 3.6 - 1  # landmark 0's vote for 1, from cell (1, 2)
    nx[0, 1, 3, 0], ny[0, 1, 3, 0] = 2.25 - 0 + vote_error, 1.5 - 3  # 1's vote for 0, from (3, 0)
    return (score, ox, oy, nx, ny), np.array([[1], [0]])


def test_hand_built_exact() -> None:
    heads, nb = _hand_built()
    pts, sc = decode(*heads, nb)
    np.testing.assert_allclose(pts[0], [[2.25 / 4, 1.5 / 4], [0.3 / 4, 3.6 / 4]], atol=1e-6)
    np.testing.assert_allclose(sc[0], [0.9, 0.7], atol=1e-7)


def test_hand_built_averages_votes() -> None:
    heads, nb = _hand_built(vote_error=0.4)
    pts, _ = decode(*heads, nb)
    np.testing.assert_allclose(pts[0, 0], [(2.25 + 2.65) / 2 / 4, 1.5 / 4], atol=1e-6)
    own, _ = decode(*heads, nb, use_neighbors=False)
    np.testing.assert_allclose(own[0, 0], [2.25 / 4, 1.5 / 4], atol=1e-6)


def test_vote_matrix_rows_sum_to_one() -> None:
    nb = np.array([[1, 2], [0, 2], [0, 1]])
    a = vote_matrix(nb)
    assert a.shape == (3, 3 * 3)  # columns landmark-major: own, then its votes
    np.testing.assert_allclose(a.sum(1), 1, atol=1e-7)
    np.testing.assert_allclose(a[0], [1 / 3, 0, 0, 0, 1 / 3, 0, 0, 1 / 3, 0], atol=1e-7)  # own + votes of 1 and 2


def reference_merge(candidates: np.ndarray, nb: np.ndarray, use_neighbors: bool = True) -> np.ndarray:
    """The paper's neighbour regression, a landmark at a time: the mean of its own prediction
    and every vote another landmark cast for it."""
    b_, n_, _, _ = candidates.shape
    out = np.zeros((b_, n_, 2))
    for b in range(b_):
        for j in range(n_):
            received = [candidates[b, j, 0]]
            if use_neighbors:
                received += [candidates[b, i, 1 + k] for i in range(n_) for k in range(nb.shape[1]) if nb[i, k] == j]
            out[b, j] = np.mean(received, axis=0)
    return out


@pytest.mark.parametrize("use_neighbors", [True, False])
def test_merge_on_a_shipped_models_outputs(samples, use_neighbors: bool) -> None:
    """The shipped pipnet-fast's candidates on real face crops (a group photo, faces found by
    the packaged detector), merged by the SDK and by the plain loop."""
    import cv2

    from pipnet_sdk import Landmarker
    from pipnet_sdk.crop import crop_faces

    landmarker = Landmarker("pipnet-fast")
    model = landmarker.model
    assert model.spec.format == 3
    image = cv2.imread(str(samples / "group_2.jpg"))
    boxes, _ = landmarker.detect_boxes(image)
    crops = crop_faces(image, landmarker.squares(boxes), model.spec.input_size)
    candidates, scores, visibility = model.forward(model.preprocess(crops))  # the shipped files have all three
    assert visibility.shape == (len(boxes), 68) and ((visibility >= 0) & (visibility <= 1)).all()
    nb = model.spec.neighbor_indices
    assert candidates.shape == (len(boxes), 68, 11, 2) and len(boxes) == 4
    got = merge(candidates, vote_matrix(nb), use_neighbors)
    np.testing.assert_allclose(got, reference_merge(candidates, nb, use_neighbors), atol=1e-6)
    model.use_neighbors = use_neighbors
    np.testing.assert_array_equal(model.decode([candidates, scores])[0], got)
    if use_neighbors:  # the votes move the points: averaging is not a no-op on real outputs
        assert np.abs(got - candidates[:, :, 0]).max() * model.spec.input_size > 0.5
