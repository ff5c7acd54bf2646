"""Landmark schemes as data: point count, flip permutation, NME normalisation points."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scheme:
    name: str
    num_points: int
    flip: tuple[int, ...]  # flip[i] = the point that i becomes after a horizontal flip
    norm: tuple[int, int] | None  # NME normaliser: distance between these points (None: box size)
    left_eye: int  # a point on the subject's right eye side of the image (for tests/docs)
    right_eye: int


def _one_based(p: list[int]) -> tuple[int, ...]:
    return tuple(i - 1 for i in p)


SCHEMES: dict[str, Scheme] = {
    # iBUG 68: 0-16 jaw, 17-26 brows, 27-35 nose, 36-47 eyes, 48-67 mouth; outer eye corners 36, 45
    "ibug68": Scheme(
        "ibug68",
        68,
        _one_based(
            [
                17,
                16,
                15,
                14,
                13,
                12,
                11,
                10,
                9,
                8,
                7,
                6,
                5,
                4,
                3,
                2,
                1,
                27,
                26,
                25,
                24,
                23,
                22,
                21,
                20,
                19,
                18,
                28,
                29,
                30,
                31,
                36,
                35,
                34,
                33,
                32,
                46,
                45,
                44,
                43,
                48,
                47,
                40,
                39,
                38,
                37,
                42,
                41,
                55,
                54,
                53,
                52,
                51,
                50,
                49,
                60,
                59,
                58,
                57,
                56,
                65,
                64,
                63,
                62,
                61,
                68,
                67,
                66,
            ]
        ),
        (36, 45),
        36,
        45,
    ),
    # WFLW 98: outer eye corners 60, 72
    "wflw98": Scheme(
        "wflw98",
        98,
        tuple(
            [
                32,
                31,
                30,
                29,
                28,
                27,
                26,
                25,
                24,
                23,
                22,
                21,
                20,
                19,
                18,
                17,
                16,
                15,
                14,
                13,
                12,
                11,
                10,
                9,
                8,
                7,
                6,
                5,
                4,
                3,
                2,
                1,
                0,
                46,
                45,
                44,
                43,
                42,
                50,
                49,
                48,
                47,
                37,
                36,
                35,
                34,
                33,
                41,
                40,
                39,
                38,
                51,
                52,
                53,
                54,
                59,
                58,
                57,
                56,
                55,
                72,
                71,
                70,
                69,
                68,
                75,
                74,
                73,
                64,
                63,
                62,
                61,
                60,
                67,
                66,
                65,
                82,
                81,
                80,
                79,
                78,
                77,
                76,
                87,
                86,
                85,
                84,
                83,
                92,
                91,
                90,
                89,
                88,
                95,
                94,
                93,
                97,
                96,
            ]
        ),
        (60, 72),
        60,
        72,
    ),
    # COFW 29: pupils 8, 9 normalise
    "cofw29": Scheme(
        "cofw29",
        29,
        _one_based(
            [2, 1, 4, 3, 7, 8, 5, 6, 10, 9, 12, 11, 15, 16, 13, 14, 18, 17, 20, 19, 21, 22, 24, 23, 25, 26, 27, 28, 29]
        ),
        (8, 9),
        8,
        9,
    ),
    # AFLW 19: normalised by the face box size (norm None)
    "aflw19": Scheme(
        "aflw19", 19, _one_based([6, 5, 4, 3, 2, 1, 12, 11, 10, 9, 8, 7, 15, 14, 13, 18, 17, 16, 19]), None, 6, 11
    ),
}


def get_scheme(name: str) -> Scheme:
    if name not in SCHEMES:
        raise ValueError(f"unknown landmark scheme {name!r}; known: {sorted(SCHEMES)}")
    return SCHEMES[name]
