"""Units of the synthetic benchmark: description grammar and semantics, quads, furniture shapes,
floor plans, a room's vertex count from its spacing."""

from __future__ import annotations

import numpy as np
import pytest

from uniseg3d.datasets.primitives import box_surface, grid_patch, merge_meshes
from uniseg3d.datasets.synthetic.catalog import COLOURS, KINDS, NOUNS
from uniseg3d.datasets.synthetic.floorplan import plan_room
from uniseg3d.datasets.synthetic.furniture import SHAPES, _cylinder
from uniseg3d.datasets.synthetic.generate import (SceneTask, layout_vertices,
                                                  spacing_for_vertices)
from uniseg3d.datasets.synthetic.mesh import pair_quads
from uniseg3d.datasets.synthetic.referring import (Anchor, Spec, check_description, parse,
                                                   render)
from uniseg3d.datasets.synthetic.relations import LOCATIONS, RELATIONS, SceneView
from uniseg3d.datasets.synthetic.rooms import LIVING, SCANNET_PROGRAMS


def _specs(rng: np.random.Generator, count: int) -> list[Spec]:
    nouns, colours = list(NOUNS), list(COLOURS)

    def pick(options):
        return options[int(rng.integers(len(options)))]

    specs = []
    for _ in range(count):
        relation = pick([None, "between", "closest to", *RELATIONS])
        anchors = {None: (), "between": (Anchor(pick(nouns)), Anchor(pick(nouns), pick(colours)))}
        superlative = pick([None, "largest", "smallest"]) if relation != "closest to" else None
        specs.append(Spec(pick(nouns), pick([None, *colours]), superlative,
                          pick([None, *LOCATIONS]), relation,
                          anchors.get(relation, (Anchor(pick(nouns), pick([None, *colours])),))))
    return specs


def test_render_then_parse_gives_the_spec_back():
    rng = np.random.default_rng(0)
    for spec in _specs(rng, 500):
        text = render(spec, rng)
        assert parse(text) == spec, text
    pair = Spec("chair", relation="between", anchors=(Anchor("table"), Anchor("table")))
    assert "between two tables" in render(pair, rng)
    assert parse(render(pair, rng)) == pair


@pytest.mark.parametrize("text", ["", "a chair.", "this is a unicorn.",
                                  "this is a chair. it is far from the table."])
def test_parse_rejects_text_outside_the_grammar(text):
    with pytest.raises(ValueError):
        parse(text)


def _object(low, high, colour: str):
    vertices, _ = box_surface(low, high, 0.05)
    return vertices, np.tile(COLOURS[colour], (len(vertices), 1))


@pytest.fixture(scope="module")
def room() -> SceneView:
    """A 4 x 4 m room: a brown table with a box on it, a small red chair south of the table,
    a large blue chair in the north-east corner."""
    floor, _ = grid_patch((0, 0, 0), (4, 0, 0), (0, 4, 0), 40, 40)
    objects = [
        (floor, np.tile(COLOURS["gray"], (len(floor), 1)), "floor"),
        (*_object((0, 0, 0), (0.01, 4, 2.5), "white"), "wall"),
        (*_object((3.99, 0, 0), (4, 4, 2.5), "white"), "wall"),
        (*_object((0, 0, 0), (4, 0.01, 2.5), "white"), "wall"),
        (*_object((0, 3.99, 0), (4, 4, 2.5), "white"), "wall"),
        (*_object((1.5, 1.5, 0), (2.5, 2.0, 0.75), "brown"), "table"),
        (*_object((1.6, 1.0, 0), (2.0, 1.4, 0.9), "red"), "chair"),
        (*_object((3.3, 3.3, 0), (3.95, 3.95, 1.0), "blue"), "chair"),
        (*_object((1.8, 1.6, 0.75), (2.1, 1.9, 0.95), "beige"), "box"),
    ]
    coords = np.concatenate([o[0] for o in objects])
    colors = np.concatenate([o[1] for o in objects]).astype(np.uint8)
    instance = np.concatenate([np.full(len(o[0]), k) for k, o in enumerate(objects)])
    return SceneView.from_points(coords, colors, instance, np.arange(len(objects)) + 10,
                                 tuple(o[2] for o in objects))


@pytest.mark.parametrize("text, expected", [
    ("this is a chair.", {16, 17}),
    ("this is a red chair.", {16}),
    ("find the largest chair.", {17}),
    ("find the smallest chair in the room.", {16}),
    ("look for a chair in the corner of the room.", {17}),
    ("this is a chair. it is next to the table.", {16}),
    ("this is a chair. it is next to the brown table.", {16}),
    ("this is a chair. it is next to the white table.", set()),
    ("this is a chair. it is to the right of the table as seen from the middle of the room.",
     {16}),
    ("this is a chair. it is to the left of the table as seen from the middle of the room.",
     set()),
    ("this is a box. it is on the table.", {18}),
    ("this is a table. it is under the box.", {15}),
    ("this is a chair. it is the one closest to the box.", {16}),
    ("find a table. it is between the chair and the box.", set()),
    ("find a table. it is between two chairs.", {15}),
    ("find a table. it stands in the middle of the room.", {15}),
])
def test_checker_semantics(room, text, expected):
    assert check_description(text, room) == expected


def test_pair_quads_restores_every_triangle():
    parts = [box_surface((0, 0, 0), (1, 0.5, 0.3), 0.1)]
    for radius in (0.3, 0.31, 0.015):
        part = _cylinder(0.0, 0.0, 0.0, radius, 1.0, 0.07)
        parts.append((part.vertices, part.faces))
    _, faces = merge_meshes(parts)
    quads, source = pair_quads(faces)
    assert len(quads) * 2 == len(faces) and len(np.unique(source)) == len(quads)
    again = np.concatenate([quads[:, :3], quads[:, [0, 2, 3]]])
    assert sorted(map(tuple, np.sort(again, 1))) == sorted(map(tuple, np.sort(faces, 1)))
    with pytest.raises(ValueError):
        pair_quads(np.array([[0, 1, 2]]))


@pytest.mark.parametrize("name", [n for n, k in KINDS.items() if k.shape not in ("shell", "door")])
def test_shapes_fill_their_box(name):
    """Layout places objects by their nominal box; the mesh must stay inside it."""
    rng = np.random.default_rng(1)
    kind = KINDS[name]
    for _ in range(3):
        size = kind.draw_size(rng)
        shape = SHAPES[kind.shape](size, 0.05, rng)
        vertices = np.concatenate([p.vertices for p in shape.parts])
        assert (vertices.min(axis=0) >= [-size[0] / 2 - 1e-9, -size[1] / 2 - 1e-9, -1e-9]).all()
        assert (vertices.max(axis=0) <= [size[0] / 2 + 1e-9, size[1] / 2 + 1e-9,
                                         size[2] + 1e-9]).all()
        assert {p.role for p in shape.parts} <= {"main", "trim"}


def test_floor_plans():
    rng = np.random.default_rng(0)
    plans = [plan_room(rng, LIVING) for _ in range(40)]
    assert {len(p.walls) for p in plans} == {4, 6}  # rectangles and L shapes
    for plan in plans:
        x, y = plan.polygon.T
        assert 0.5 * (x @ np.roll(y, -1) - y @ np.roll(x, -1)) > 0  # counter-clockwise
        assert [o.kind for o in plan.openings].count("door") == 1
        for a in plan.openings:
            assert 0 < a.t0 < a.t1 < plan.walls[a.wall].length and a.z1 <= plan.height - 0.2
            for b in plan.openings:
                assert a is b or a.wall != b.wall or a.t1 <= b.t0 or b.t1 <= a.t0


def test_programs_cover_scannet20_and_keep_novel_classes_out():
    kinds = {k for program in SCANNET_PROGRAMS for r in program.requests if r.required
             for k in r.kinds}
    nyu40 = {KINDS[k].nyu40 for k in kinds} | {1, 2, 8, 9}  # + walls, floor, door, window
    assert {3, 4, 5, 6, 7, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39} <= nyu40
    used = {k for program in SCANNET_PROGRAMS for r in program.requests for k in r.kinds}
    assert not any(KINDS[k].novel for k in used)


def test_spacing_for_vertices_gives_rooms_of_the_asked_size(tmp_path):
    rooms = [SceneTask(str(tmp_path), "scannet", index, 0) for index in range(4)]
    at_default = [layout_vertices(task) for task in rooms]
    assert max(at_default) > 1.5 * min(at_default)  # rooms differ in size at one spacing
    for task, vertices in zip(rooms, (10_000, 20_000, 60_000, 150_000)):
        spacing = spacing_for_vertices(task, vertices)
        assert layout_vertices(SceneTask(str(tmp_path), "scannet", task.index, 0, spacing)) \
            == pytest.approx(vertices, rel=0.03)
    assert not list(tmp_path.iterdir())  # nothing written
    with pytest.raises(ValueError, match="vertices must be >= 1"):
        spacing_for_vertices(rooms[0], 0)
