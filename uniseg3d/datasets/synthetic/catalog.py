"""What the synthetic rooms are made of: named colours and object kinds.

A kind is one raw category with one shape: its nyu40 id (which decides its ScanNet20 class),
the builder in `furniture.SHAPES`, a size range (width along the wall it backs onto, depth, height
in metres) and colour palettes by part role ('main' decides the colour an object is described
by, 'trim' is legs, frames, handles). Several raw categories share a ScanNet20 class (chair,
office chair, armchair -> chair), as in ScanNet's label map. Kinds marked `novel` (lamp, plant,
monitor, pillow, nightstand, trash bin, vase) only ever occur in the Replica-format scenes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (236, 236, 232), "black": (38, 38, 40), "gray": (128, 128, 130),
    "brown": (115, 72, 42), "beige": (214, 196, 160), "red": (180, 35, 40),
    "blue": (45, 75, 155), "green": (55, 130, 65), "yellow": (225, 190, 55),
}
COLOUR_NAMES = tuple(COLOURS)
COLOUR_TABLE = np.array([COLOURS[name] for name in COLOUR_NAMES], dtype=np.float64)

STRUCTURE = ("wall", "floor", "ceiling")
"""Raw categories of the room shell: never described and never used as anchors."""

WOOD = ("brown", "beige", "white", "black")
FABRIC = ("red", "blue", "green", "gray", "beige", "brown", "black", "yellow")


@dataclass(frozen=True)
class Kind:
    """One raw category with one shape, size range and palette."""

    raw: str
    nyu40: int
    shape: str
    size_low: tuple[float, float, float]
    size_high: tuple[float, float, float]
    main: tuple[str, ...]
    trim: tuple[str, ...] = ()
    round: bool = False  # width == depth (cylinders)
    novel: bool = False

    def draw_size(self, rng: np.random.Generator) -> np.ndarray:
        size = rng.uniform(self.size_low, self.size_high)
        if self.round:
            size[1] = size[0]
        return np.round(size, 3)

    def draw_colours(self, rng: np.random.Generator) -> dict[str, str]:
        return {"main": str(rng.choice(self.main)), "trim": str(rng.choice(self.trim or self.main))}


def _kinds(*kinds: tuple[str, Kind]) -> dict[str, Kind]:
    return dict(kinds)


KINDS: dict[str, Kind] = _kinds(
    ("wall", Kind("wall", 1, "shell", (0, 0, 0), (0, 0, 0), ("white", "beige", "gray"))),
    ("floor", Kind("floor", 2, "shell", (0, 0, 0), (0, 0, 0), ("brown", "gray", "beige"))),
    ("ceiling", Kind("ceiling", 22, "shell", (0, 0, 0), (0, 0, 0), ("white",))),
    ("door", Kind("door", 8, "door", (0.8, 0.04, 2.0), (0.95, 0.04, 2.1),
                  ("brown", "white", "beige", "gray"), ("gray", "black"))),
    ("window", Kind("window", 9, "window", (0.8, 0.06, 1.0), (1.6, 0.06, 1.4), ("white",),
                    ("gray",))),
    ("chair", Kind("chair", 5, "chair", (0.42, 0.45, 0.8), (0.5, 0.52, 0.95), FABRIC, WOOD)),
    ("office chair", Kind("office chair", 5, "office chair", (0.55, 0.55, 0.9),
                          (0.65, 0.62, 1.1), ("black", "gray", "blue", "red"), ("black", "gray"))),
    ("armchair", Kind("armchair", 5, "armchair", (0.75, 0.75, 0.75), (0.95, 0.9, 0.95), FABRIC)),
    ("couch", Kind("couch", 6, "couch", (1.6, 0.8, 0.75), (2.3, 0.95, 0.9), FABRIC,
                   ("black", "brown"))),
    ("table", Kind("table", 7, "table", (1.0, 0.7, 0.72), (1.6, 0.9, 0.78), WOOD, WOOD)),
    ("dining table", Kind("dining table", 7, "table", (1.2, 0.8, 0.73), (2.0, 1.0, 0.78), WOOD,
                          WOOD)),
    ("coffee table", Kind("coffee table", 7, "table", (0.8, 0.5, 0.4), (1.3, 0.7, 0.48), WOOD,
                          WOOD)),
    ("desk", Kind("desk", 14, "desk", (1.1, 0.6, 0.72), (1.6, 0.8, 0.78), WOOD + ("gray",))),
    ("bed", Kind("bed", 4, "bed", (1.0, 1.95, 0.9), (1.8, 2.1, 1.1),
                 ("white", "blue", "gray", "beige", "red", "green"), ("brown", "black", "white"))),
    ("cabinet", Kind("cabinet", 3, "cabinet", (0.5, 0.4, 0.8), (1.0, 0.6, 1.9),
                     ("brown", "white", "beige", "gray"), ("gray", "black"))),
    ("kitchen cabinet", Kind("kitchen cabinet", 3, "cabinet", (0.5, 0.55, 0.85),
                             (1.0, 0.6, 0.9), ("white", "brown", "beige", "gray", "green"),
                             ("gray", "black"))),
    ("file cabinet", Kind("file cabinet", 3, "cabinet", (0.4, 0.55, 0.7), (0.5, 0.65, 1.3),
                          ("gray", "black", "beige"), ("black", "gray"))),
    ("bathroom cabinet", Kind("bathroom cabinet", 3, "cabinet", (0.4, 0.3, 0.6),
                              (0.8, 0.45, 0.9), ("white", "beige"), ("gray",))),
    ("dresser", Kind("dresser", 17, "cabinet", (0.8, 0.45, 0.75), (1.4, 0.55, 1.1),
                     ("brown", "white", "beige"), ("black", "gray"))),
    ("tv stand", Kind("tv stand", 39, "cabinet", (1.0, 0.4, 0.45), (1.8, 0.5, 0.6),
                      ("black", "brown", "white"), ("gray",))),
    ("nightstand", Kind("nightstand", 32, "cabinet", (0.4, 0.35, 0.5), (0.55, 0.45, 0.65),
                        WOOD, ("gray",), novel=True)),
    ("microwave", Kind("microwave", 40, "cabinet", (0.45, 0.35, 0.28), (0.55, 0.4, 0.32),
                       ("white", "black", "gray"), ("black", "gray"))),
    ("bookshelf", Kind("bookshelf", 10, "bookshelf", (0.6, 0.28, 1.2), (1.2, 0.38, 2.0), WOOD)),
    ("picture", Kind("picture", 11, "picture", (0.4, 0.03, 0.3), (1.0, 0.04, 0.8),
                     ("red", "blue", "green", "yellow", "beige", "black", "white"),
                     ("black", "brown", "white"))),
    ("poster", Kind("poster", 11, "picture", (0.4, 0.02, 0.55), (0.7, 0.02, 0.95),
                    ("red", "blue", "green", "yellow", "white"), ("white", "black"))),
    ("mirror", Kind("mirror", 19, "picture", (0.4, 0.03, 0.5), (0.7, 0.03, 0.9), ("gray",),
                    ("white", "black", "brown"))),
    ("kitchen counter", Kind("kitchen counter", 12, "counter", (1.0, 0.6, 0.88),
                             (2.4, 0.65, 0.92), ("white", "brown", "beige", "gray"),
                             ("gray", "black", "white", "beige"))),
    ("counter", Kind("counter", 12, "counter", (1.0, 0.55, 0.88), (2.0, 0.65, 0.95),
                     ("white", "brown", "gray"), ("gray", "black", "beige"))),
    ("bathroom counter", Kind("bathroom counter", 12, "counter", (0.8, 0.5, 0.82),
                              (1.4, 0.55, 0.88), ("white", "beige", "brown"),
                              ("white", "gray", "beige"))),
    ("refrigerator", Kind("refrigerator", 24, "refrigerator", (0.6, 0.65, 1.6),
                          (0.8, 0.75, 1.9), ("white", "gray", "black"), ("gray", "black"))),
    ("toilet", Kind("toilet", 33, "toilet", (0.38, 0.65, 0.75), (0.45, 0.75, 0.85), ("white",))),
    ("sink", Kind("sink", 34, "basin", (0.45, 0.35, 0.15), (0.7, 0.45, 0.2), ("white", "gray"))),
    ("pedestal sink", Kind("sink", 34, "pedestal sink", (0.5, 0.4, 0.8), (0.6, 0.5, 0.9),
                           ("white",))),
    ("bathtub", Kind("bathtub", 36, "basin", (1.5, 0.7, 0.5), (1.8, 0.8, 0.6),
                     ("white", "beige"))),
    ("shower curtain", Kind("shower curtain", 28, "curtain", (1.5, 0.08, 1.3),
                            (1.8, 0.1, 1.5), ("white", "blue", "beige", "green", "yellow"))),
    ("curtain", Kind("curtain", 16, "curtain", (1.0, 0.1, 1.4), (1.8, 0.14, 1.8),
                     ("red", "blue", "beige", "white", "gray", "green", "yellow"))),
    ("radiator", Kind("radiator", 39, "radiator", (0.6, 0.08, 0.45), (1.2, 0.12, 0.55),
                      ("white",))),
    ("ottoman", Kind("ottoman", 39, "ottoman", (0.45, 0.45, 0.4), (0.7, 0.7, 0.45), FABRIC,
                     ("black", "brown"))),
    ("bench", Kind("bench", 39, "table", (1.0, 0.35, 0.42), (1.6, 0.45, 0.48), WOOD, WOOD)),
    ("box", Kind("box", 29, "box", (0.25, 0.25, 0.2), (0.5, 0.45, 0.4), ("brown", "beige"))),
    ("tv", Kind("tv", 25, "screen", (0.8, 0.2, 0.5), (1.3, 0.25, 0.8), ("black",), ("black",))),
    ("monitor", Kind("monitor", 40, "screen", (0.5, 0.18, 0.4), (0.7, 0.22, 0.5),
                     ("black", "gray"), ("black",), novel=True)),
    ("table lamp", Kind("lamp", 35, "lamp", (0.22, 0.22, 0.35), (0.35, 0.35, 0.6),
                        ("white", "beige", "yellow"), ("black", "gray", "brown"), round=True,
                        novel=True)),
    ("floor lamp", Kind("lamp", 35, "lamp", (0.35, 0.35, 1.4), (0.45, 0.45, 1.7),
                        ("white", "beige", "yellow"), ("black", "gray"), round=True, novel=True)),
    ("plant", Kind("plant", 40, "plant", (0.3, 0.3, 0.5), (0.6, 0.6, 1.3), ("green",),
                   ("brown", "gray", "white", "black"), round=True, novel=True)),
    ("pillow", Kind("pillow", 18, "pillow", (0.45, 0.3, 0.1), (0.6, 0.4, 0.15), FABRIC + ("white",),
                    novel=True)),
    ("trash bin", Kind("trash bin", 39, "bin", (0.25, 0.25, 0.35), (0.35, 0.35, 0.6),
                       ("gray", "black", "white", "blue"), round=True, novel=True)),
    ("vase", Kind("vase", 40, "bin", (0.12, 0.12, 0.2), (0.2, 0.2, 0.4),
                  ("blue", "white", "red", "green", "yellow"), round=True, novel=True)),
)

NOVEL_CLASSES = tuple(sorted({kind.raw for kind in KINDS.values() if kind.novel}))
SCANNET_CATEGORIES = tuple(dict.fromkeys(
    kind.raw for kind in KINDS.values() if not kind.novel and kind.raw != "ceiling"))
"""Raw categories that may occur in the ScanNet-format scenes (and are in the label map)."""
REPLICA_CLASSES = tuple(dict.fromkeys(kind.raw for kind in KINDS.values()))
"""Replica's class table (id = position + 1), the same in every Replica-format scene."""
NOUNS = tuple(sorted(set(REPLICA_CLASSES), key=len, reverse=True))
"""Every object name a description may use, longest first (for the parser)."""

NYU40 = {  # nyu40 id -> (nyu40 class, eigen13 id, eigen13 class, mpcat40, mpcat40 index)
    1: ("wall", 12, "Wall", "wall", 1), 2: ("floor", 5, "Floor", "floor", 2),
    3: ("cabinet", 6, "Furniture", "cabinet", 7), 4: ("bed", 1, "Bed", "bed", 11),
    5: ("chair", 4, "Chair", "chair", 3), 6: ("sofa", 9, "Sofa", "sofa", 10),
    7: ("table", 10, "Table", "table", 5), 8: ("door", 12, "Wall", "door", 4),
    9: ("window", 13, "Window", "window", 9), 10: ("bookshelf", 6, "Furniture", "shelving", 31),
    11: ("picture", 8, "Picture", "picture", 6), 12: ("counter", 6, "Furniture", "counter", 26),
    14: ("desk", 10, "Table", "table", 5), 16: ("curtain", 13, "Window", "curtain", 12),
    17: ("dresser", 6, "Furniture", "chest_of_drawers", 13),
    19: ("mirror", 7, "Objects", "mirror", 21),
    24: ("refridgerator", 6, "Furniture", "appliances", 37),
    25: ("television", 11, "TV", "tv_monitor", 22),
    28: ("shower curtain", 13, "Window", "curtain", 12), 29: ("box", 7, "Objects", "objects", 39),
    33: ("toilet", 7, "Objects", "toilet", 18), 34: ("sink", 7, "Objects", "sink", 15),
    36: ("bathtub", 7, "Objects", "bathtub", 25),
    39: ("otherfurniture", 6, "Furniture", "furniture", 36),
    40: ("otherprop", 7, "Objects", "objects", 39),
}


def category_nyu40(raw: str) -> int:
    """The nyu40 id of a raw category of the catalog."""
    return next(kind.nyu40 for kind in KINDS.values() if kind.raw == raw)
