"""A PIPNet ONNX file that describes itself: metadata, forward pass and decoding."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from .decode import candidates_from_maps, merge, vote_matrix, vote_spread, vote_targets
from .hub import DIGEST_KEY, check_file_digest
from .runtime import ModelFormatError, make_session

META_KEY = "pipnet"
#: where files are made and upgraded: export/, in the repository only (never say `python -m export...`)
TRAINING_TOOLS = (
    "the training tools, which are not part of the wheel (in a clone of the pipnet-sdk "
    'repository: pip install -e ".[export]", then see export/README.md)'
)
# format 1: the five head maps; format 3: each landmark's candidates (own prediction and neighbour
# votes) and score, read in the graph at its argmax cell. Both are merged here (decode.merge).
OUTPUTS = {1: ("score", "offset_x", "offset_y", "neighbor_x", "neighbor_y"), 3: ("candidates", "scores")}
# a format-3 file whose network learned each point's visibility has a third output, (B, N) in [0, 1]
VISIBILITY = "visibility"


class Marks(NamedTuple):
    """Landmarks of F faces: points (F, N, 2) (normalised to the crop from LandmarkModel, in image
    pixels from Landmarker), their scores (F, N), each point's visibility (F, N) in [0, 1] (None
    when the model file has no visibility output), and each point's vote spread (F, N) in crop
    units (decode.vote_spread)."""

    points: np.ndarray
    scores: np.ndarray
    visibility: np.ndarray | None
    spread: np.ndarray


#: added to the vote spread before its log (crop units): spreads below it all read the same
SPREAD_FLOOR = 1e-3


POINT_FEATURES = {"log_spread", "visibility", "score", "face_log_spread", "face_visibility", "face_score"}


def point_features(scores: np.ndarray, visibility: np.ndarray, spread: np.ndarray) -> dict[str, np.ndarray]:
    """What the point-quality calibration reads: the point's log vote spread, visibility and score
    (F, N), and the face's means of the three (F, 1)."""
    log_spread = np.log(spread + np.float32(SPREAD_FLOOR))
    return {
        "log_spread": log_spread,
        "visibility": visibility,
        "score": scores,
        "face_log_spread": log_spread.mean(1, keepdims=True),
        "face_visibility": visibility.mean(1, keepdims=True),
        "face_score": scores.mean(1, keepdims=True),
    }


#: the face quality's features, by the names its calibration gives them, and the point_features each is
QUALITY_FEATURES = {
    "mean_score": "face_score",
    "mean_visibility": "face_visibility",
    "mean_log_spread": "face_log_spread",
}


@dataclass(frozen=True)
class UprightRule:
    """When ``Landmarker.upright`` gives a face a second look (the model file's ``crop.upright``;
    files without it get these defaults): a face whose mean landmark score is below ``score`` is
    also cropped a quarter, a half and three quarters round; a face whose landmarks are turned
    more than ``roll`` degrees from the mean face is cropped again turned with them, ``refits``
    times."""

    score: float = 0.75
    roll: float = 20.0
    refits: int = 2

    @classmethod
    def from_dict(cls, d: object, source: str = "model") -> UprightRule:
        bad = ModelFormatError(
            f"{source}: crop.upright must be {{score: 0-1, roll: degrees in (0, 180), refits: 0-5}}, got {d!r}"
        )
        if not isinstance(d, dict) or set(d) - {"score", "roll", "refits"}:
            raise bad
        values = {**cls().__dict__, **d}
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values()):
            raise bad
        rule = cls(score=float(values["score"]), roll=float(values["roll"]), refits=int(values["refits"]))
        in_range = 0 <= rule.score <= 1 and 0 < rule.roll < 180 and 0 <= rule.refits <= 5
        if not in_range or rule.refits != values["refits"]:
            raise bad
        return rule


REQUIRED = (
    "format",
    "name",
    "version",
    "num_landmarks",
    "scheme",
    "input_size",
    "stride",
    "num_neighbors",
    "neighbor_indices",
    "mean_face",
    "normalization",
    "crop",
)


@dataclass(frozen=True)
class LandmarkSpec:
    """What a model file says about itself (its ``metadata_props['pipnet']`` JSON)."""

    format: int
    name: str
    version: str
    num_landmarks: int
    scheme: str
    input_size: int
    stride: int
    num_neighbors: int
    neighbor_indices: np.ndarray  # (N, C) int
    mean_face: np.ndarray  # (N, 2) normalised
    mean: np.ndarray  # (3,) per channel, on 0-1 pixel values, in `color` order
    std: np.ndarray
    color: str  # "rgb" or "bgr": channel order the network expects
    crop_scale: float
    crop_shift_y: float
    upright: UprightRule
    extra: dict

    @classmethod
    def from_json(cls, text: str, source: str = "model") -> LandmarkSpec:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ModelFormatError(f"{source}: metadata '{META_KEY}' is not valid JSON: {e}") from e
        missing = [k for k in REQUIRED if k not in d]
        if missing:
            raise ModelFormatError(f"{source}: metadata '{META_KEY}' lacks {missing}")
        if d["format"] == 2:
            raise ModelFormatError(
                f"{source} is a format-2 file (neighbour averaging inside the graph), which this SDK no "
                f"longer reads: use a current model (`pipnet models`), or upgrade the file with {TRAINING_TOOLS}"
            )
        if d["format"] not in OUTPUTS:
            raise ModelFormatError(
                f"{source}: metadata format {d['format']} is not supported (this SDK reads "
                f"formats {sorted(OUTPUTS)}); upgrade pipnet-sdk"
            )
        nb = np.asarray(d["neighbor_indices"], dtype=np.int64)
        n = int(d["num_landmarks"])
        if nb.shape != (n, int(d["num_neighbors"])) or nb.min() < 0 or nb.max() >= n:
            raise ModelFormatError(f"{source}: neighbor_indices do not fit {n} landmarks")
        norm = d["normalization"]
        return cls(
            format=int(d["format"]),
            name=d["name"],
            version=str(d["version"]),
            num_landmarks=n,
            scheme=d["scheme"],
            input_size=int(d["input_size"]),
            stride=int(d["stride"]),
            num_neighbors=int(d["num_neighbors"]),
            neighbor_indices=nb,
            mean_face=np.asarray(d["mean_face"], dtype=np.float32),
            mean=np.asarray(norm["mean"], dtype=np.float32),
            std=np.asarray(norm["std"], dtype=np.float32),
            color=norm.get("color", "rgb"),
            crop_scale=float(d["crop"]["scale"]),
            crop_shift_y=float(d["crop"]["shift_y"]),
            upright=UprightRule.from_dict(d["crop"].get("upright", {}), source),
            extra={k: v for k, v in d.items() if k not in REQUIRED},
        )


def read_spec(session, source: str) -> LandmarkSpec:
    props = session.get_modelmeta().custom_metadata_map
    if META_KEY not in props:
        raise ModelFormatError(
            f"{source} has no '{META_KEY}' metadata: it is not a pipnet-sdk landmark model "
            f"(`pipnet models` lists the usable ones; new ones are exported by {TRAINING_TOOLS})"
        )
    spec = LandmarkSpec.from_json(props[META_KEY], source)
    names = [o.name for o in session.get_outputs()]
    expected = list(OUTPUTS[spec.format])
    if names[: len(expected)] != expected:
        raise ModelFormatError(f"{source}: outputs are {names}, expected {expected} (format {spec.format})")
    return spec


class LandmarkModel:
    """PIPNet in onnxruntime, the network alone: face crops in, normalised points and scores out.
    Safe to share across threads. Image-side steps (boxes, crop squares, test crops, image
    coordinates) belong to :class:`pipnet_sdk.Landmarker`.

    ``flip_test`` also runs each crop mirrored and averages the two predictions (twice the work).
    ``use_neighbors=False`` skips the neighbour averaging (each landmark's own prediction).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        providers: Sequence | None = None,
        threads: int | None = None,
        use_neighbors: bool = True,
        flip_test: bool = False,
        test_crops: int = 1,
    ) -> None:
        if test_crops != 1:  # test crops are image-side work now
            raise TypeError("LandmarkModel no longer takes test_crops: use Landmarker(test_crops=...)")
        self.path = os.fspath(path)
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ModelFormatError(f"cannot read the model file {self.path}: {e}") from e
        self.session = make_session(self.path, providers, threads, data=data)
        self.spec = read_spec(self.session, self.path)
        self.sealed = DIGEST_KEY in self.spec.extra  # the file carries its own digest
        if self.sealed:
            check_file_digest(data, str(self.spec.extra[DIGEST_KEY]), self.path)
        else:
            warnings.warn(
                f"{self.path} carries no digest ({DIGEST_KEY}), so damage to it cannot be "
                f"detected; re-export or upgrade it with {TRAINING_TOOLS}",
                UserWarning,
                stacklevel=3,
            )
        self.input_name = self.session.get_inputs()[0].name
        self.has_visibility = self.spec.format == 3 and VISIBILITY in [o.name for o in self.session.get_outputs()]
        self._outputs = list(OUTPUTS[self.spec.format]) + ([VISIBILITY] if self.has_visibility else [])
        self.use_neighbors = use_neighbors
        flip = self.spec.extra.get("flip")
        if flip_test and not flip:
            raise ModelFormatError(f"{self.path}: flip_test needs a 'flip' permutation in the metadata")
        self.flip = np.asarray(flip, dtype=np.int64) if flip_test else None
        self._averaging = vote_matrix(self.spec.neighbor_indices)
        self._targets = vote_targets(self.spec.neighbor_indices)
        self._point_coef: list[tuple[str, float]] | None = None
        pq = self.spec.extra.get("point_quality")
        if pq is not None and not (
            isinstance(pq, dict)
            and len(pq.get("intercepts", ())) == self.spec.num_landmarks
            and len(pq.get("coef", ())) == len(pq.get("features", ())) > 0
            and set(pq["features"]) <= POINT_FEATURES
        ):
            raise ModelFormatError(
                f"{self.path}: point_quality must give {self.spec.num_landmarks} intercepts and one coef per "
                f"feature, features from {sorted(POINT_FEATURES)}"
            )
        q = self.spec.extra.get("quality")
        if q and not (
            isinstance(q, dict)
            and len(q.get("coef", ())) == len(q.get("features", ())) > 0
            and set(q["features"]) <= set(QUALITY_FEATURES)
        ):
            raise ModelFormatError(
                f"{self.path}: quality must give one coef per feature, features from {sorted(QUALITY_FEATURES)} "
                "(a file newer than this SDK? pip install -U pipnet-sdk)"
            )
        if pq is not None:
            self._point_coef = [(name, float(c)) for name, c in zip(pq["features"], pq["coef"])]
            self._point_intercepts = np.asarray(pq["intercepts"], np.float32)[None]
        s = self.spec
        # fold normalisation into one multiply-add on 0-255 values
        self._scale = (1.0 / (255.0 * s.std)).astype(np.float32)
        self._shift = (-s.mean / s.std).astype(np.float32)

    def qualities(self, marks: Marks) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Each face's quality (F,) and each point's quality (F, N), from one reading of their
        features (point_features); each None when the file carries no such calibration, both None
        without visibility."""
        if marks.visibility is None:
            return None, None
        features = point_features(marks.scores, marks.visibility, marks.spread)
        q = self.spec.extra.get("quality")
        face = self.quality_of(q, features) if q else None
        if self._point_coef is None:
            return face, None
        z = self._point_intercepts + sum(c * features[name] for name, c in self._point_coef)
        return face, (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def quality(self, marks: Marks) -> np.ndarray | None:
        """Each face's quality (F,): the calibrated probability that its landmarks are good (NME
        within the file's ``quality.good_nme`` of the inter-ocular distance), from its mean
        landmark score and mean visibility (and, in files since 0.6.3, its mean log vote spread);
        None when the file carries no calibration or no visibility."""
        return self.qualities(marks)[0]

    def point_quality(self, marks: Marks) -> np.ndarray | None:
        """Each point's quality (F, N): the calibrated probability that it lies within the file's
        ``point_quality.bad_error`` of the inter-ocular distance from the truth, from its vote
        spread, visibility and score and its face's means of them (point_features); None when
        the file carries no such calibration or no visibility."""
        return self.qualities(marks)[1]

    @staticmethod
    def quality_of(calibration: dict, features: dict[str, np.ndarray]) -> np.ndarray:
        """The face quality (F,) a calibration (a file's ``quality`` entry) gives faces whose
        point_features are ``features``."""
        names, coef = calibration["features"], calibration["coef"]
        z = float(calibration["intercept"]) + sum(
            float(c) * features[QUALITY_FEATURES[name]][:, 0] for name, c in zip(names, coef)
        )
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def preprocess(self, crops_bgr: np.ndarray) -> np.ndarray:
        """(F, S, S, 3) uint8 BGR crops -> (F, 3, S, S) float32 network input."""
        if len(crops_bgr) == 0:
            s = self.spec.input_size
            return np.zeros((0, 3, s, s), np.float32)
        # one C++ pass: HWC uint8 -> CHW float32, channel swap if the network wants RGB
        x: np.ndarray = cv2.dnn.blobFromImages(list(crops_bgr), 1.0, swapRB=self.spec.color == "rgb")
        x *= self._scale[:, None, None]
        x += self._shift[:, None, None]
        return x

    def forward(self, batch: np.ndarray) -> list[np.ndarray]:
        """The network's outputs for a (B, 3, S, S) input, as the file's format lays them out (and
        the visibility last, when the file has it)."""
        return self.session.run(self._outputs, {self.input_name: batch})

    def candidates(self, outputs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Network outputs -> candidates (B, N, 1 + C, 2) and scores (B, N) (see decode.py)."""
        if self.spec.format == 3:
            return outputs[0], outputs[1]
        return candidates_from_maps(*outputs[:5])

    def decode(self, outputs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Network outputs -> normalised points (B, N, 2) and scores (B, N)."""
        candidates, scores = self.candidates(outputs)
        return merge(candidates, self._averaging, self.use_neighbors), scores

    def run_crops(self, crops_bgr: np.ndarray, batch_size: int = 32) -> Marks:
        """Normalised points (F, N, 2), scores (F, N) and visibility (F, N) or None for uint8 BGR
        crops. With flip_test, each crop also runs mirrored and the two predictions are averaged."""
        n = self.spec.num_landmarks
        if len(crops_bgr) == 0:
            empty = np.zeros((0, n), np.float32)
            return Marks(np.zeros((0, n, 2), np.float32), empty, empty if self.has_visibility else None, empty)
        pts, scs, vis, spr = [], [], [], []
        for i in range(0, len(crops_bgr), batch_size):
            chunk = crops_bgr[i : i + batch_size]
            if self.flip is not None:
                chunk = np.concatenate([chunk, chunk[:, :, ::-1]])
            outputs = self.forward(self.preprocess(chunk))
            c, s = self.candidates(outputs)
            p = merge(c, self._averaging, self.use_neighbors)
            d = vote_spread(c, p, self._averaging, self._targets)
            v = outputs[-1] if self.has_visibility else None
            if self.flip is not None:
                k, f = len(p) // 2, self.flip
                mirrored = p[k:][:, f] * np.array([-1, 1], np.float32) + np.array([1, 0], np.float32)
                p, s, d = (p[:k] + mirrored) / 2, (s[:k] + s[k:][:, f]) / 2, (d[:k] + d[k:][:, f]) / 2
                if v is not None:
                    v = (v[:k] + v[k:][:, f]) / 2
            pts.append(p)
            scs.append(s)
            vis.append(v)
            spr.append(d)
        if len(pts) == 1:  # one batch: no copy
            return Marks(pts[0], scs[0], vis[0], spr[0])
        seen = [v for v in vis if v is not None]
        return Marks(
            np.concatenate(pts), np.concatenate(scs), np.concatenate(seen) if seen else None, np.concatenate(spr)
        )
