"""Training augmentations of point coordinates.

Two forms, chosen by `AugmentConfig.elastic_form`:

- `ours`: random flips of x and y, rotation about z, scaling, elastic distortion (Gaussian-blurred
  noise on a grid of the given granularity), translation, every step every time;
- `official` (UniSeg3D's `GlobalRotScaleTrans` then `ElasticTransfrom`): rotation about z,
  scaling, translation, then with probability `elastic_probability` the two elastic passes of
  the code: a noise grid of |x|max // granularity + 3 cells a side spanning +-(cells - 1) x
  granularity (so its cells are two granularities apart), each noise volume box-filtered (3
  taps, zero outside) along x, y, z and again, trilinearly interpolated (zero outside the grid)
  and scaled by the magnitude. The code works in 2 cm voxel units (granularities 6 and 20,
  magnitudes 40 and 160); in metres, as here, each is x 0.02, which gives the same displacement
  (the construction scales with the unit).
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import RegularGridInterpolator
from scipy.ndimage import gaussian_filter, uniform_filter1d

from uniseg3d.config import AugmentConfig


def elastic_distortion(coords: np.ndarray, granularity: float, magnitude: float,
                       rng: np.random.Generator) -> np.ndarray:
    """Displace points by smooth noise: Gaussian-blurred random offsets on a coarse grid,
    trilinearly interpolated at every point."""
    low = coords.min(0) - 2 * granularity
    shape = ((coords.max(0) - low) // granularity).astype(int) + 4
    noise = gaussian_filter(rng.standard_normal((3, *shape)).astype(np.float32),
                            sigma=(0, 1, 1, 1))
    axes = [low[d] + granularity * np.arange(shape[d]) for d in range(3)]
    offsets = RegularGridInterpolator(axes, np.moveaxis(noise, 0, -1), bounds_error=False,
                                      fill_value=0.0)(coords)  # the three axes at once
    return coords + magnitude * offsets


def official_elastic(coords: np.ndarray, granularity: float, magnitude: float,
                     rng: np.random.Generator) -> np.ndarray:
    """One elastic pass of UniSeg3D's `ElasticTransfrom.elastic` (see the module docstring)."""
    cells = (np.abs(coords).max(0) // granularity).astype(int) + 3
    noise = rng.standard_normal((3, *cells)).astype(np.float32)
    for _ in range(2):
        for axis in (1, 2, 3):
            noise = uniform_filter1d(noise, 3, axis=axis, mode="constant", cval=0.0)
    axes = [np.linspace(-(b - 1) * granularity, (b - 1) * granularity, b) for b in cells]
    offsets = RegularGridInterpolator(axes, np.moveaxis(noise, 0, -1), bounds_error=False,
                                      fill_value=0.0)(coords)
    return coords + magnitude * offsets


def flip_and_rotate(xyz: np.ndarray, rng: np.random.Generator, config: AugmentConfig
                    ) -> np.ndarray:
    """Random flips of x and y (if `config.flip`) and a rotation about z (if `config.rotate`)."""
    if config.flip:
        xyz = xyz * np.append(np.where(rng.random(2) < 0.5, -1.0, 1.0), 1.0)
    if config.rotate:
        angle = rng.uniform(-np.pi, np.pi)
        c, s = np.cos(angle), np.sin(angle)
        xyz = xyz @ np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])
    return xyz


def augment_coords(coords: np.ndarray, rng: np.random.Generator, config: AugmentConfig
                   ) -> np.ndarray:
    """A randomly transformed copy of (N, 3) coordinates."""
    if config.elastic_form == "official":
        return official_augment(coords, rng, config)
    xyz = coords.astype(np.float64)
    center = xyz.mean(0)
    xyz = flip_and_rotate(xyz - center, rng, config)
    xyz *= rng.uniform(*config.scale)
    for granularity, magnitude in config.elastic:
        xyz = elastic_distortion(xyz, granularity, magnitude, rng)
    xyz += center + rng.normal(0.0, config.translate_std, 3)
    return xyz.astype(np.float32)


def official_augment(coords: np.ndarray, rng: np.random.Generator, config: AugmentConfig
                     ) -> np.ndarray:
    """The official order: rotation, scaling and translation about the origin, then the elastic
    passes with probability `config.elastic_probability` (no flip unless `config.flip`)."""
    xyz = flip_and_rotate(coords.astype(np.float64), rng, config)
    xyz = xyz * rng.uniform(*config.scale) + rng.normal(0.0, config.translate_std, 3)
    if rng.random() < config.elastic_probability:
        for granularity, magnitude in config.elastic:
            xyz = official_elastic(xyz, granularity, magnitude, rng)
    return xyz.astype(np.float32)
