"""Training augmentations: rigid parts keep shapes up to one scale; elastic distortion is a
smooth displacement field."""

import dataclasses

import numpy as np

from uniseg3d.config import AugmentConfig
from uniseg3d.datasets.augment import augment_coords, elastic_distortion


def pairwise(points: np.ndarray) -> np.ndarray:
    return np.linalg.norm(points[:, None] - points[None], axis=2)


def test_without_elastic_distortion_shapes_change_by_one_scale_only():
    coords = np.random.default_rng(0).uniform(0, 4, (50, 3)).astype(np.float32)
    config = dataclasses.replace(AugmentConfig(), elastic=())
    moved = augment_coords(coords, np.random.default_rng(1), config)
    ratio = pairwise(moved)[np.triu_indices(50, 1)] / pairwise(coords)[np.triu_indices(50, 1)]
    assert np.allclose(ratio, ratio[0], rtol=1e-4)
    assert config.scale[0] <= ratio[0] <= config.scale[1]
    assert not np.allclose(moved, coords)


def test_elastic_distortion_is_a_smooth_field_of_the_given_magnitude():
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 3, (2000, 3))
    assert np.array_equal(elastic_distortion(coords, 0.2, 0.0, rng), coords)
    offsets = elastic_distortion(coords, 0.2, 0.1, np.random.default_rng(5)) - coords
    assert 0.005 < offsets.std() < 0.1  # blurred unit noise x 0.1
    nearby = coords + 0.001  # 1.7 mm away: almost the same displacement
    close = elastic_distortion(nearby, 0.2, 0.1, np.random.default_rng(5)) - nearby
    assert np.abs(close - offsets).max() < 0.05 * np.abs(offsets).max()
    # the same seed gives the same field; the three axes get different noise
    again = elastic_distortion(coords, 0.2, 0.1, np.random.default_rng(5)) - coords
    assert np.array_equal(again, offsets)
    assert abs(np.corrcoef(offsets[:, 0], offsets[:, 1])[0, 1]) < 0.5
