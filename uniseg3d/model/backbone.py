"""Sparse-convolution UNet backbone on spconv, with voxelisation and superpoint pooling.

Points are voxelised at `voxel_size` (2 cm in the paper); a voxel's input feature is the mean of
its points' features (RGB/127.5 - 1 and scene-centred xyz), as MinkowskiEngine's collate with
its default unweighted-average quantisation computes it. The UNet has one level per entry of
`channels` with `blocks` residual blocks each; voxel features are mapped back to points and
mean-pooled per superpoint with torch's scatter ops (no torch-scatter).

Both recipes share this network. They differ only in two settings, held by `Grid` and `bn_eps`:
`ours` pads the sparse grid to a multiple of 32 voxels and keeps torch's BatchNorm eps (1e-5);
`official` (UniSeg3D's code) uses BatchNorm eps 1e-4 and a grid of max(extent, 128) voxels per
axis, unpadded, so that a stride-2 convolution drops the last voxel row of an odd-sized axis.

spconv's default (implicit GEMM) algorithm needs CUDA; on CPU every conv uses
`ConvAlgo.Native`, which is exact and deterministic there. `precision` (`model.precision`:
fp32, or bf16 / fp16 on CUDA) is the autocast the voxel network runs under at inference; the
superpoint features it returns are fp32 either way.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from uniseg3d.model.precision import autocast
from uniseg3d.model.stopwatch import NO_TIMING

with warnings.catch_warnings():  # spconv 2.3 still uses the deprecated torch.cuda.amp decorators
    warnings.simplefilter("ignore", FutureWarning)
    import spconv.pytorch as spconv


def conv_algorithm(device: str | torch.device) -> spconv.ConvAlgo:
    """Native on CPU (the default algorithm fails there), spconv's default on CUDA."""
    return spconv.ConvAlgo.MaskImplicitGemm if torch.device(device).type == "cuda" \
        else spconv.ConvAlgo.Native


@dataclass(frozen=True)
class Grid:
    """How the sparse grid's spatial shape follows the voxels' extent (per axis, over a batch)."""

    multiple: int = 32  # round up to a multiple (32 = 2^5: no voxel lost in six levels)
    minimum: int = 0  # at least this many voxels

    def shape(self, extent: torch.Tensor) -> torch.Tensor:
        shape = extent.clamp_min(self.minimum)
        return (shape + self.multiple - 1) // self.multiple * self.multiple


OURS_GRID = Grid()
# UniSeg3D's `collate`: torch.clip(max + 1, min_spatial_shape=128), no padding. An odd axis then
# loses its last voxel row at a stride-2 convolution (spconv drops outputs past the grid); the
# released numbers were computed that way, so the official recipe keeps it.
OFFICIAL_GRID = Grid(multiple=1, minimum=128)


@dataclass
class Voxels:
    """A batch of voxelised point clouds."""

    features: torch.Tensor  # (V, C) mean point feature per voxel
    indices: torch.Tensor  # (V, 4) int32: batch index, x, y, z
    point_to_voxel: torch.Tensor  # (N,) voxel row of every point (points of all scenes, in order)
    spatial_shape: list[int]
    batch_size: int


def scatter_mean(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Mean of `values` rows grouped by `index` into `size` rows (empty groups give 0)."""
    out = values.new_zeros((size, values.shape[1]))
    out.index_add_(0, index, values)
    count = torch.bincount(index, minlength=size).clamp_min(1).to(values.dtype)
    return out / count[:, None]


def point_features(coords: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
    """The paper's input: RGB/127.5 - 1 and xyz centred on the scene."""
    return torch.cat([colors.float() / 127.5 - 1.0, coords - coords.mean(0, keepdim=True)], 1)


def voxelize(coords: list[torch.Tensor], features: list[torch.Tensor], voxel_size: float,
             grid: Grid = OURS_GRID) -> Voxels:
    """Voxelise several scenes into one sparse batch (voxel grid anchored at each scene's min:
    floor((xyz - min) / voxel_size), features averaged over the points of a voxel).

    Voxels are found by one 1-D `torch.unique` over linear keys ((b * X + x) * Y + y) * Z + z,
    whose numeric order is the lexicographic order of (b, x, y, z)."""
    cells = [torch.floor((c - c.min(0).values) / voxel_size).long() for c in coords]
    shape = grid.shape(torch.stack([g.max(0).values for g in cells]).max(0).values + 1)
    sx, sy, sz = (int(v) for v in shape.tolist())
    keys = torch.cat([((b * sx + g[:, 0]) * sy + g[:, 1]) * sz + g[:, 2]
                      for b, g in enumerate(cells)])
    unique, inverse = torch.unique(keys, return_inverse=True)
    indices = torch.stack([unique // (sx * sy * sz), unique // (sy * sz) % sx,
                           unique // sz % sy, unique % sz], 1)
    feats = scatter_mean(torch.cat(features), inverse, len(unique))
    return Voxels(feats, indices.int(), inverse, [sx, sy, sz], len(coords))


class ResidualBlock(spconv.SparseModule):
    """Two 3x3x3 submanifold convolutions with batch norm, plus an identity (or 1x1) shortcut."""

    def __init__(self, cin: int, cout: int, algo: spconv.ConvAlgo, key: str, eps: float):
        super().__init__()
        # a 1x1x1 SubMConv3d is computed by spconv as features @ weight.view(cout, cin).T, with
        # no index pairs: the same in both recipes, and for UniSeg3D's `i_branch` weights
        self.shortcut = nn.Identity() if cin == cout else spconv.SparseSequential(
            spconv.SubMConv3d(cin, cout, 1, bias=False, algo=algo))
        self.body = spconv.SparseSequential(
            nn.BatchNorm1d(cin, eps=eps), nn.ReLU(),
            spconv.SubMConv3d(cin, cout, 3, padding=1, bias=False, indice_key=key, algo=algo),
            nn.BatchNorm1d(cout, eps=eps), nn.ReLU(),
            spconv.SubMConv3d(cout, cout, 3, padding=1, bias=False, indice_key=key, algo=algo))

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        shortcut = self.shortcut(x) if not isinstance(self.shortcut, nn.Identity) else x
        out = self.body(x)
        return out.replace_feature(out.features + shortcut.features)


class UBlock(spconv.SparseModule):
    """One UNet level: residual blocks, then (if deeper levels remain) down, recurse, up, merge."""

    def __init__(self, channels: list[int], blocks: int, algo: spconv.ConvAlgo, eps: float,
                 level: int = 0):
        super().__init__()
        c = channels[0]
        self.encoder = spconv.SparseSequential(
            *[ResidualBlock(c, c, algo, f"subm{level}", eps) for _ in range(blocks)])
        self.inner = None
        if len(channels) > 1:
            c2 = channels[1]
            self.down = spconv.SparseSequential(
                nn.BatchNorm1d(c, eps=eps), nn.ReLU(),
                spconv.SparseConv3d(c, c2, 2, stride=2, bias=False, indice_key=f"down{level}",
                                    algo=algo))
            self.inner = UBlock(channels[1:], blocks, algo, eps, level + 1)
            self.up = spconv.SparseSequential(
                nn.BatchNorm1d(c2, eps=eps), nn.ReLU(),
                spconv.SparseInverseConv3d(c2, c, 2, bias=False, indice_key=f"down{level}",
                                           algo=algo))
            self.decoder = spconv.SparseSequential(
                ResidualBlock(2 * c, c, algo, f"subm{level}", eps),
                *[ResidualBlock(c, c, algo, f"subm{level}", eps) for _ in range(blocks - 1)])

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        x = self.encoder(x)
        if self.inner is None:
            return x
        up = self.up(self.inner(self.down(x)))
        return self.decoder(up.replace_feature(torch.cat([x.features, up.features], 1)))


class SparseUNet(nn.Module):
    """Points -> per-superpoint features through a sparse 3D UNet."""

    def __init__(self, in_channels: int = 6, channels: tuple[int, ...] = (32, 64, 96, 128, 160),
                 blocks: int = 2, voxel_size: float = 0.02, device: str = "cpu",
                 grid: Grid = OURS_GRID, bn_eps: float = 1e-5):
        super().__init__()
        algo = conv_algorithm(device)
        self.voxel_size = voxel_size
        self.grid = grid
        self.out_channels = channels[0]
        self.stem = spconv.SparseSequential(
            spconv.SubMConv3d(in_channels, channels[0], 3, padding=1, bias=False,
                              indice_key="stem", algo=algo))
        self.unet = UBlock(list(channels), blocks, algo, bn_eps)
        self.head = nn.Sequential(nn.BatchNorm1d(channels[0], eps=bn_eps), nn.ReLU())
        self.precision = "fp32"  # inference autocast (`model.precision.set_precision`)

    def forward_voxels(self, voxels: Voxels) -> torch.Tensor:
        """Feature per voxel, (V, channels[0]), in fp32."""
        x = spconv.SparseConvTensor(voxels.features, voxels.indices, voxels.spatial_shape,
                                    voxels.batch_size)
        with autocast(self.precision, voxels.features.device):
            return self.head(self.unet(self.stem(x)).features).float()

    def forward(self, coords: list[torch.Tensor], colors: list[torch.Tensor],
                superpoints: list[torch.Tensor], stopwatch=NO_TIMING) -> list[torch.Tensor]:
        """Mean feature per superpoint for each scene: a list of (M_b, channels[0]) tensors."""
        with stopwatch("voxelisation"):
            features = [point_features(c, rgb) for c, rgb in zip(coords, colors)]
            voxels = voxelize(coords, features, self.voxel_size, self.grid)
        with stopwatch("backbone"):
            per_voxel = self.forward_voxels(voxels)
        with stopwatch("superpoint pooling"):
            per_point = per_voxel[voxels.point_to_voxel]
            pooled, start = [], 0
            for sp in superpoints:
                pooled.append(scatter_mean(per_point[start:start + len(sp)], sp,
                                           int(sp.max()) + 1))
                start += len(sp)
        return pooled
