"""spconv convolution weights in the layout a checkpoint stores them, and back to ours.

Checkpoints of this model family store a sparse convolution's 5-D weight in more than one axis
order: spconv >= 2.2 saves `[out,k,k,k,in]` (the layout our modules use), spconv 1.x, 2.0 and
2.1 (SSTNet's `sstnet_scannet.pth`, the official backbone initialisation) `[k,k,k,in,out]`,
and other conversions `[k,k,in,out,k]` or `[out,in,k,k,k]`. A layout here is any placement of
the `out` and `in` axes among the three kernel axes, which keep their spatial order (no shape
can tell kernel axes apart: every kernel is a cube).

`to_native` decides the file's layout from its convolution weights' shapes against the shapes
our model expects: a layer fits the layouts under which its shape is the expected one, and the
file's layout is the one every layer fits. Layers with in != out, or kernel sizes unlike the
channel counts, are what decide; a file whose layers all fit several layouts (e.g. every layer
square: in == out) is refused naming the candidates and the keys, unless the layout is named;
layers that fit disjoint layouts are a mixed file, refused. Every convolution weight of the file
is then permuted to ours; a weight that fits no layout is left as it is for the caller's strict
shape check to report.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

import torch

NATIVE = ("out", "k", "k", "k", "in")
KNOWN = {  # the layouts met in released checkpoints
    ("out", "k", "k", "k", "in"): "spconv >= 2.2",
    ("k", "k", "k", "in", "out"): "spconv 1.x, 2.0 and 2.1, e.g. SSTNet",
    ("k", "k", "in", "out", "k"): "reported by OneFormer3D users",
    ("out", "in", "k", "k", "k"): "dense-convolution order",
}


class ConvLayoutError(ValueError):
    """A file whose convolution weights' layout cannot be decided, is mixed, or does not fit
    the layout named."""


def all_layouts() -> list[tuple[str, ...]]:
    """Every placement of `out` and `in` among the kernel axes: the known ones first."""
    others = sorted({p for p in permutations(NATIVE)} - set(KNOWN))
    return list(KNOWN) + others


def layout_name(layout: tuple[str, ...]) -> str:
    return "[" + ",".join(layout) + "]"


def parse_layout(text: str) -> tuple[str, ...]:
    """'k,k,k,in,out' or '[k,k,k,in,out]' -> the layout; anything else is an error listing the
    known layouts."""
    layout = tuple(part.strip() for part in text.strip().strip("[]").split(","))
    if sorted(layout) != sorted(NATIVE):
        raise ConvLayoutError(
            f"spconv layout {text!r}: expected the axes out, in and three k in some order, "
            f"e.g. {', '.join(','.join(known) for known in KNOWN)}")
    return layout


def permutation(layout: tuple[str, ...]) -> tuple[int, ...]:
    """For each axis of `layout`, the native axis it holds (`native.permute(...)` gives it)."""
    kernel = iter((1, 2, 3))
    return tuple(0 if axis == "out" else 4 if axis == "in" else next(kernel) for axis in layout)


def stored_shape(native: torch.Size | tuple[int, ...], layout: tuple[str, ...]
                 ) -> tuple[int, ...]:
    """The shape a weight of `native` shape has when stored in `layout`."""
    return tuple(native[axis] for axis in permutation(layout))


def to_layout(weight: torch.Tensor, layout: tuple[str, ...]) -> torch.Tensor:
    """A native `[out,k,k,k,in]` weight stored in `layout`."""
    return weight.permute(permutation(layout))


def from_layout(weight: torch.Tensor, layout: tuple[str, ...]) -> torch.Tensor:
    """A weight stored in `layout`, in the native `[out,k,k,k,in]` order."""
    order = permutation(layout)
    return weight.permute(tuple(order.index(axis) for axis in range(5))).contiguous()


@dataclass(frozen=True)
class LayoutFinding:
    layout: tuple[str, ...]
    converted: int  # convolution weights permuted to ours (0 when stored as ours)
    deciding: tuple[str, ...]  # keys that decided it; () when it was named
    named: bool

    def describe(self) -> str:
        how = "named" if self.named else (
            f"found from {len(self.deciding)} layers, e.g. {', '.join(self.deciding[:2])}")
        known = KNOWN.get(self.layout)
        return (f"spconv weight layout {layout_name(self.layout)}"
                f"{f' ({known})' if known else ''}, {how}; {self.converted} convolution "
                f"weights converted to {layout_name(NATIVE)}")


def fitting_layouts(stored: torch.Size, native: torch.Size) -> list[tuple[str, ...]]:
    return [layout for layout in all_layouts() if stored_shape(native, layout) == tuple(stored)]


def to_native(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
              named: str | None = None, label=str
              ) -> tuple[dict[str, torch.Tensor], LayoutFinding | None]:
    """`state` (keys as `expected`'s) with every convolution weight (5-D in both) in our
    layout, and what was found (None when the state holds no convolution weight); `named`
    fixes the layout; `label(key)` names a key in messages (e.g. the file's own name)."""
    convs = [k for k in state if k in expected and state[k].dim() == 5 and expected[k].dim() == 5]
    if not convs:
        return state, None
    fits = {k: fitting_layouts(state[k].shape, expected[k].shape) for k in convs}
    informative = [k for k in convs if fits[k]]
    if named is not None:
        layout = parse_layout(named)
        wrong = sorted((k for k in informative if layout not in fits[k]),
                       key=lambda k: len(fits[k]))  # the deciding layers first
        if wrong:
            raise ConvLayoutError(
                f"the spconv layout {layout_name(layout)} named does not fit "
                f"{len(wrong)} convolution weights: " + "; ".join(
                    f"{label(k)} {tuple(state[k].shape)} fits "
                    f"{' or '.join(map(layout_name, fits[k]))}" for k in wrong[:4]))
        deciding: tuple[str, ...] = ()
    else:
        candidates = [c for c in all_layouts() if all(c in fits[k] for k in informative)]
        if not candidates:
            groups: dict[tuple, str] = {}
            for k in informative:
                groups.setdefault(tuple(fits[k]), k)
            raise ConvLayoutError(
                "mixed spconv weight layouts in one file: " + "; ".join(
                    f"{label(k)} {tuple(state[k].shape)} is {' or '.join(map(layout_name, g))}"
                    for g, k in list(groups.items())[:4]))
        if len(candidates) > 1:
            raise ConvLayoutError(
                f"cannot decide the spconv weight layout: all {len(informative)} convolution "
                f"weights fit {' and '.join(map(layout_name, candidates))} (no layer with "
                f"in != out decides it; keys: {', '.join(map(label, informative[:5]))}"
                f"{' ...' if len(informative) > 5 else ''}); name it with --spconv-layout "
                "(training: train.init_backbone_layout)")
        layout = candidates[0]
        deciding = tuple(label(k) for k in informative if len(fits[k]) == 1) or \
            tuple(map(label, informative))
    native = dict(state)
    converted = 0
    if layout != NATIVE:
        for k in informative:
            native[k] = from_layout(state[k], layout)
            converted += 1
    return native, LayoutFinding(layout, converted, deciding, named is not None)
