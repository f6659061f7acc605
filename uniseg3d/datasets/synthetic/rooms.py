"""Room programs: what each room type holds and how each piece is placed.

A program lists requests in placement order (large pieces first). A request draws one kind for
its whole group and a count; `mount` says how the pieces are placed (see `layout.py`), `near`
which already placed kinds they attach to, `required` that the room is re-planned when none can
be placed, and `matching` that the group shares one size and one colour (chairs around a table).
The ScanNet-format programs cycle bedroom, kitchen, bathroom, living room, office, so any five
consecutive scenes hold all 20 ScanNet classes; the Replica-format program holds the novel ones.
"""

from __future__ import annotations

from dataclasses import dataclass

@dataclass(frozen=True)
class Request:
    kinds: tuple[str, ...]
    count: tuple[int, int]
    mount: str
    near: tuple[str, ...] = ()
    required: bool = False
    matching: bool = False


@dataclass(frozen=True)
class Program:
    name: str
    size_low: tuple[float, float]
    size_high: tuple[float, float]
    l_shape: float  # probability of an L-shaped floor plan
    windows: tuple[int, int]
    requests: tuple[Request, ...]


R = Request
TABLES = ("table", "dining table", "coffee table")

BEDROOM = Program("bedroom", (3.6, 3.6), (5.0, 5.0), 0.3, (1, 2), (
    R(("bed",), (1, 1), "wall", required=True),
    R(("curtain",), (1, 2), "window", required=True),
    R(("desk",), (0, 1), "wall"),
    R(("chair", "office chair"), (1, 1), "front", near=("desk",)),
    R(("cabinet", "dresser"), (1, 2), "wall"),
    R(("bookshelf",), (0, 1), "wall"),
    R(("radiator",), (0, 1), "window"),
    R(("picture", "poster"), (1, 2), "hang"),
    R(("ottoman", "bench"), (0, 1), "free"),
    R(("box",), (0, 2), "on", near=("desk", "dresser", "cabinet")),
))
KITCHEN = Program("kitchen", (3.8, 3.4), (5.5, 5.0), 0.3, (1, 2), (
    R(("refrigerator",), (1, 1), "corner", required=True),
    R(("kitchen counter", "counter"), (2, 3), "wall", required=True),
    R(("sink",), (1, 1), "on", near=("kitchen counter", "counter"), required=True),
    R(("kitchen cabinet",), (1, 3), "wall", required=True, matching=True),
    R(("dining table", "table"), (1, 1), "free", required=True),
    R(("chair",), (2, 6), "around", near=("dining table", "table"), required=True,
      matching=True),
    R(("microwave",), (0, 1), "on", near=("kitchen counter", "counter")),
    R(("box",), (0, 2), "on", near=("kitchen counter", "counter", "dining table", "table")),
    R(("radiator",), (0, 1), "window"),
    R(("picture",), (0, 1), "hang"),
))
BATHROOM = Program("bathroom", (2.8, 2.6), (3.8, 3.4), 0.0, (0, 1), (
    R(("bathtub",), (1, 1), "corner", required=True),
    R(("shower curtain",), (1, 1), "tub", near=("bathtub",), required=True),
    R(("toilet",), (1, 1), "wall", required=True),
    R(("pedestal sink",), (1, 1), "wall", required=True),
    R(("bathroom counter",), (0, 1), "wall"),
    R(("sink",), (1, 1), "on", near=("bathroom counter",)),
    R(("bathroom cabinet",), (0, 2), "wall", matching=True),
    R(("mirror",), (0, 1), "hang"),
    R(("radiator",), (0, 1), "window"),
    R(("picture", "poster"), (2, 3), "hang"),
))
LIVING = Program("living room", (4.5, 4.0), (6.5, 6.0), 0.4, (1, 3), (
    R(("couch",), (1, 2), "wall", required=True),
    R(("tv stand",), (1, 1), "wall", required=True),
    R(("tv",), (1, 1), "on", near=("tv stand",)),
    R(("coffee table",), (1, 1), "free", required=True),
    R(("bookshelf", "cabinet"), (1, 2), "wall"),
    R(("armchair",), (1, 2), "free"),
    R(("table",), (0, 1), "free"),
    R(("chair",), (2, 4), "around", near=("table",), matching=True),
    R(("curtain",), (0, 2), "window"),
    R(("radiator",), (0, 1), "window"),
    R(("picture", "poster"), (1, 3), "hang", required=True),
    R(("ottoman",), (0, 1), "free"),
    R(("box",), (0, 1), "on", near=TABLES),
))
OFFICE = Program("office", (4.2, 3.8), (6.0, 5.5), 0.3, (1, 2), (
    R(("desk",), (2, 3), "wall", required=True, matching=True),
    R(("office chair",), (2, 3), "front", near=("desk",), required=True, matching=True),
    R(("bookshelf",), (1, 2), "wall", required=True),
    R(("file cabinet",), (1, 2), "wall"),
    R(("table",), (0, 1), "free"),
    R(("chair",), (2, 4), "around", near=("table",), matching=True),
    R(("curtain",), (0, 1), "window"),
    R(("radiator",), (0, 1), "window"),
    R(("picture",), (0, 2), "hang"),
    R(("box",), (0, 3), "on", near=("desk", "table", "file cabinet")),
))
APARTMENT = Program("apartment", (6.0, 5.5), (7.5, 7.0), 0.4, (2, 3), (
    R(("bed",), (1, 1), "wall", required=True),
    R(("nightstand",), (1, 2), "beside", near=("bed",), required=True),
    R(("couch",), (1, 1), "wall", required=True),
    R(("desk",), (1, 1), "wall", required=True),
    R(("office chair",), (1, 1), "front", near=("desk",)),
    R(("coffee table",), (1, 1), "free", required=True),
    R(("table lamp",), (1, 2), "on", near=("nightstand",), required=True),
    R(("monitor",), (1, 1), "on", near=("desk",), required=True),
    R(("pillow",), (1, 3), "on", near=("bed", "couch"), required=True),
    R(("vase",), (1, 1), "on", near=("coffee table", "nightstand"), required=True),
    R(("plant",), (1, 2), "corner", required=True),
    R(("trash bin",), (1, 2), "wall", required=True),
    R(("floor lamp",), (0, 1), "corner"),
    R(("bookshelf", "cabinet"), (0, 2), "wall"),
    R(("curtain",), (0, 2), "window"),
    R(("picture",), (1, 2), "hang"),
))

SCANNET_PROGRAMS = (BEDROOM, KITCHEN, BATHROOM, LIVING, OFFICE)
REPLICA_PROGRAMS = (APARTMENT,)
