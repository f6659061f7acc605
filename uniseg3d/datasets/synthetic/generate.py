"""One synthetic scene, start to end: a pure function of (seed, format, index), for a process pool.

Each scene draws from its own random generator, seeded from (seed, format, index), so scenes are
the same whichever worker makes them and in whatever order. A ScanNet-format scene cycles
through the room programs by index, is segmented by the project's segmentator and described
with referring expressions checked on its own written geometry; a Replica-format scene gets a
ceiling and quad faces.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from uniseg3d.datasets.superpoints import segment_mesh
from uniseg3d.datasets.synthetic.floorplan import plan_room, shell
from uniseg3d.datasets.synthetic.layout import furnish
from uniseg3d.datasets.synthetic.mesh import SceneObject, assemble
from uniseg3d.datasets.synthetic.referring import describe_object, render, tokenize
from uniseg3d.datasets.synthetic.relations import SceneView
from uniseg3d.datasets.synthetic.rooms import REPLICA_PROGRAMS, SCANNET_PROGRAMS
from uniseg3d.datasets.synthetic.writer import write_replica_scene, write_scannet_scene

FORMATS = ("scannet", "replica")
DEFAULT_SPACING = 0.05
"""Mean vertex spacing (metres); about 45k vertices per room."""
DESCRIPTIONS_PER_OBJECT = (2, 5)
K_THRESH, MIN_VERTS = 0.01, 20
LAYOUT_ATTEMPTS = 100


@dataclass(frozen=True)
class SceneTask:
    out: str  # dataset root
    fmt: str  # "scannet" or "replica"
    index: int
    seed: int
    spacing: float = DEFAULT_SPACING
    split: str = ""  # "train" / "val" for ScanNet-format scenes

    @property
    def scene_id(self) -> str:
        return f"scene{self.index:04d}_00" if self.fmt == "scannet" else f"room_{self.index}"

    @property
    def scene_dir(self) -> Path:
        root = Path(self.out) / ("scans" if self.fmt == "scannet" else "replica")
        return root / self.scene_id

    def generator(self) -> np.random.Generator:
        """The scene's own generator, seeded from (seed, format, index)."""
        if self.fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.fmt!r}")
        return np.random.default_rng([self.seed, FORMATS.index(self.fmt), self.index])


@dataclass
class SceneResult:
    scene_id: str
    fmt: str
    split: str
    room: str
    vertices: int
    objects: int
    categories: Counter = field(default_factory=Counter)
    descriptions: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def _layout(task: SceneTask, rng: np.random.Generator) -> tuple[str, list[SceneObject]]:
    programs = SCANNET_PROGRAMS if task.fmt == "scannet" else REPLICA_PROGRAMS
    program = programs[task.index % len(programs)]
    for _ in range(LAYOUT_ATTEMPTS):
        plan = plan_room(rng, program)
        objects = furnish(plan, program, rng, task.spacing,
                          shell(plan, rng, task.spacing, ceiling=task.fmt == "replica"))
        if objects is not None:
            return program.name, objects
    raise RuntimeError(f"{task.scene_id}: no {program.name} layout in {LAYOUT_ATTEMPTS} tries")


def scanrefer_records(scene_id: str, view: SceneView, rng: np.random.Generator) -> list[dict]:
    """ScanRefer records for every describable object of a scene."""
    records = []
    for t in np.flatnonzero(view.describable()):
        count = int(rng.integers(DESCRIPTIONS_PER_OBJECT[0], DESCRIPTIONS_PER_OBJECT[1] + 1))
        for ann_id, spec in enumerate(describe_object(view, int(t), count, rng)):
            text = render(spec, rng)
            records.append({"scene_id": scene_id, "object_id": str(int(view.object_ids[t])),
                            "object_name": view.names[t].replace(" ", "_"),
                            "ann_id": str(ann_id), "description": text,
                            "token": tokenize(text)})
    return records


def generate_scene(task: SceneTask) -> SceneResult:
    """Generate and write one scene; returns what the dataset-level files need."""
    start = time.perf_counter()
    rng = task.generator()
    room, objects = _layout(task, rng)
    mesh = assemble(objects, rng)
    labels = [o.raw for o in objects]
    result = SceneResult(task.scene_id, task.fmt, task.split, room, len(mesh.vertices),
                         len(objects), Counter(labels))
    if task.fmt == "replica":
        write_replica_scene(task.scene_dir, mesh, labels)
    else:
        segments = segment_mesh(mesh.vertices, mesh.faces, K_THRESH, MIN_VERTS)
        write_scannet_scene(task.scene_dir, mesh, segments, labels, K_THRESH, MIN_VERTS)
        view = SceneView.from_points(mesh.vertices, mesh.colors, mesh.vertex_object,
                                     np.arange(len(objects)), tuple(labels))
        result.descriptions = scanrefer_records(task.scene_id, view, rng)
    result.seconds = time.perf_counter() - start
    return result


def layout_vertices(task: SceneTask) -> int:
    """How many vertices `generate_scene(task)` writes, from the room's layout alone (no noise,
    segmentation, descriptions or files)."""
    _, objects = _layout(task, task.generator())
    return sum(len(part.vertices) for scene_object in objects for part in scene_object.parts)


def spacing_for_vertices(task: SceneTask, vertices: int, rounds: int = 2) -> float:
    """A vertex spacing at which `task`'s room has about `vertices` vertices: a room's layout
    does not depend on its spacing and its vertex count goes about as spacing^-2, so each of
    `rounds` corrections, from `task.spacing` on, counts the layout's vertices and rescales."""
    if vertices < 1:
        raise ValueError(f"vertices must be >= 1, got {vertices}")
    spacing = task.spacing
    for _ in range(rounds):
        spacing *= float(np.sqrt(layout_vertices(replace(task, spacing=spacing)) / vertices))
    return spacing
