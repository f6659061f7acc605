"""Training augmentations of point coordinates (the paper's ScanNet recipe, after OneFormer3D /
SoftGroup): random flips of x and y, rotation about z, scaling, elastic distortion, translation."""

from __future__ import annotations

import numpy as np
from scipy.interpolate import RegularGridInterpolator
from scipy.ndimage import gaussian_filter

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


def augment_coords(coords: np.ndarray, rng: np.random.Generator, config: AugmentConfig
                   ) -> np.ndarray:
    """A randomly transformed copy of (N, 3) coordinates."""
    xyz = coords.astype(np.float64)
    center = xyz.mean(0)
    xyz = xyz - center
    if config.flip:
        xyz[:, :2] *= np.where(rng.random(2) < 0.5, -1.0, 1.0)
    if config.rotate:
        angle = rng.uniform(-np.pi, np.pi)
        c, s = np.cos(angle), np.sin(angle)
        xyz = xyz @ np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])
    xyz *= rng.uniform(*config.scale)
    for granularity, magnitude in config.elastic:
        xyz = elastic_distortion(xyz, granularity, magnitude, rng)
    xyz += center + rng.normal(0.0, config.translate_std, 3)
    return xyz.astype(np.float32)
