"""Training augmentations: rigid parts keep shapes up to one scale; elastic distortion is a
smooth displacement field."""

import dataclasses

import numpy as np

from uniseg3d.config import AugmentConfig
from uniseg3d.datasets.augment import augment_coords, elastic_distortion, official_elastic


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


def test_official_elastic_pass_by_hand_and_in_metres_as_in_voxels():
    """One pass of the code's construction on a small cloud, rebuilt with plain loops."""
    coords = np.random.default_rng(0).uniform(0, 1, (30, 3))
    out = official_elastic(coords, 0.3, 0.5, np.random.default_rng(4))
    cells = (np.abs(coords).max(0) // 0.3).astype(int) + 3
    noise = np.random.default_rng(4).standard_normal((3, *cells)).astype(np.float32)
    for _ in range(2):
        for axis in range(3):  # 3-tap box filter, zero outside
            padded = np.pad(noise, [(0, 0)] + [(1, 1) if a == axis else (0, 0)
                                              for a in range(3)])
            shifted = [np.take(padded, range(k, k + cells[axis]), axis=axis + 1)
                       for k in range(3)]
            noise = sum(shifted) / 3
    spacing = 2 * 0.3  # +-(cells - 1) * granularity over cells points
    expected = []
    for point in coords:
        u = (point + (cells - 1) * 0.3) / spacing
        i = np.floor(u).astype(int)
        f = u - i
        value = np.zeros(3)
        for corner in np.ndindex(2, 2, 2):
            weight = np.prod([f[a] if corner[a] else 1 - f[a] for a in range(3)])
            value += weight * noise[:, i[0] + corner[0], i[1] + corner[1], i[2] + corner[2]]
        expected.append(point + 0.5 * value)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    # the code's voxel units (granularity 6, magnitude 40 at 2 cm) give the same field in metres
    in_voxels = official_elastic(coords / 0.02, 6, 40, np.random.default_rng(4)) * 0.02
    np.testing.assert_allclose(official_elastic(coords, 0.12, 0.8, np.random.default_rng(4)),
                               in_voxels, rtol=1e-5, atol=1e-6)


def test_official_form_distorts_half_the_scenes_and_never_flips():
    coords = np.random.default_rng(0).uniform(0, 4, (200, 3)).astype(np.float32)
    config = AugmentConfig(flip=False, elastic=((0.12, 0.8), (0.4, 3.2)), elastic_form="official",
                           elastic_probability=0.5)
    rigid = 0
    for seed in range(40):
        moved = augment_coords(coords, np.random.default_rng(seed), config)
        ratio = pairwise(moved)[np.triu_indices(200, 1)] / pairwise(coords)[np.triu_indices(200, 1)]
        rigid += bool(np.allclose(ratio, ratio[0], rtol=1e-4))
        # a rotation about z with a positive scale keeps handedness: no mirror image
        a, b, c = (moved[1:4] - moved[0]).astype(np.float64)
        a0, b0, c0 = (coords[1:4] - coords[0]).astype(np.float64)
        if np.allclose(ratio, ratio[0], rtol=1e-4):
            assert np.sign(np.dot(np.cross(a, b), c)) == np.sign(np.dot(np.cross(a0, b0), c0))
    assert 10 <= rigid <= 30  # about half of 40 (binomial, p = 0.5)
