"""The package's layers: data flows one way, and no module imports one from a higher layer.

Order, lowest first: config and palette; datasets; model; metrics (plain arrays); pipelines;
serve (the app runs the pipelines' predict); benchmarks (may run the pipelines and the app);
reports; cli. Type-only imports (under `if TYPE_CHECKING:`) count too, except that `metrics`
may name the model's prediction types it reads.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "uniseg3d"
LAYERS = ("config", "palette", "resources", "datasets", "model", "metrics", "pipelines",
          "serve", "benchmarks", "reports", "cli")
RANK = {"config": 0, "palette": 0, "resources": 0, "datasets": 1, "model": 2, "metrics": 3,
        "pipelines": 4, "serve": 5, "benchmarks": 6, "reports": 7, "cli": 8}


def layer_of(module: str) -> str:
    """'uniseg3d.model.decoder' -> 'model'."""
    return module.split(".")[1]


def imported_modules(path: Path) -> list[tuple[str, bool]]:
    """(uniseg3d module, whether only under TYPE_CHECKING) for every import in the file."""
    tree = ast.parse(path.read_text())
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only |= {id(n) for child in node.body for n in ast.walk(child)}
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found += [(name, id(node) in type_only) for name in names
                  if name.startswith("uniseg3d.")]
    return found


def upward_imports(package: Path = PACKAGE) -> list[str]:
    problems = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package.parent).with_suffix("")
        module = ".".join(relative.parts)
        if module in ("uniseg3d.__init__", "uniseg3d.__main__"):
            continue
        own = layer_of(module)
        for target, type_only in imported_modules(path):
            other = layer_of(target)
            if type_only and own == "metrics" and other == "model":
                continue
            if RANK[other] > RANK[own]:
                problems.append(f"{module} imports {target}")
    return problems


def test_every_layer_is_ranked():
    on_disk = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
               if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))
               and p.stem not in ("__init__", "__main__")}
    assert on_disk <= set(LAYERS) == set(RANK)


def test_no_module_imports_a_higher_layer():
    assert upward_imports() == []


def test_the_check_sees_upward_imports_type_only_ones_too(tmp_path):
    fake = tmp_path / "uniseg3d"
    (fake / "datasets").mkdir(parents=True)
    (fake / "metrics").mkdir()
    (fake / "datasets" / "bad.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from uniseg3d.model.decoder import UnifiedDecoder\n")
    (fake / "metrics" / "fine.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from uniseg3d.model.postprocess import Instances\n"
        "import uniseg3d.datasets.scene\n")
    (fake / "metrics" / "bad.py").write_text("import uniseg3d.pipelines.train\n")
    assert upward_imports(fake) == ["uniseg3d.datasets.bad imports uniseg3d.model.decoder",
                                    "uniseg3d.metrics.bad imports uniseg3d.pipelines.train"]


@pytest.mark.parametrize("module, layer", [("uniseg3d.model.official.network", "model"),
                                           ("uniseg3d.cli", "cli")])
def test_layer_of(module, layer):
    assert layer_of(module) == layer
