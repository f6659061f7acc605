"""Click-prompt strategies on point sets whose answers are worked out by hand."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy.spatial import cKDTree

from uniseg3d.datasets.clicks import STRATEGIES, choose_click, sample_clicks

# Five points on the x axis; centroid x = (0 + 1 + 2 + 3 + 9) / 5 = 3.
LINE = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0], [9, 0, 0]], dtype=np.float64)


def test_center_is_the_point_nearest_the_centroid() -> None:
    assert choose_click(LINE, np.ones(5, bool), "center") == 3


def test_center_ties_go_to_the_smallest_index() -> None:
    square = np.array([[1, 1, 0], [-1, 1, 0], [1, -1, 0], [-1, -1, 0]], dtype=np.float64)
    assert choose_click(square, np.ones(4, bool), "center") == 0


def test_rd_ranks_points_by_distance_to_the_centroid() -> None:
    # Distances to x = 3: 3, 2, 1, 0, 6 -> ranked indices 3, 2, 1, 0, 4.
    mask = np.ones(5, bool)
    assert choose_click(LINE, mask, "rd", rd=0.0) == choose_click(LINE, mask, "center") == 3
    assert choose_click(LINE, mask, "rd", rd=1.0) == 4  # round(5) = 5, clamped to rank 4
    assert choose_click(LINE, mask, "rd", rd=0.5) == 1  # round(2.5) = 2 (half to even)
    assert choose_click(LINE, mask, "rd", rd=0.2) == 2  # rank 1
    assert choose_click(LINE, mask, "rd", rd=0.6) == 0  # rank 3


def test_random_is_inside_the_instance_and_reproducible() -> None:
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(200, 3))
    mask = np.zeros(200, bool)
    mask[50:80] = True
    picks = [choose_click(coords, mask, "random", np.random.default_rng(7)) for _ in range(3)]
    assert len(set(picks)) == 1 and mask[picks[0]]
    rng = np.random.default_rng(1)
    assert all(mask[choose_click(coords, mask, "random", rng)] for _ in range(50))


def _grid(x: range, y: range) -> np.ndarray:
    """One point at the centre of each 5 cm voxel (i, j, 0) for i in x, j in y."""
    i, j = np.meshgrid(np.array(x), np.array(y), indexing="ij")
    centres = np.stack([i.ravel(), j.ravel(), np.zeros(i.size)], axis=1) + 0.5
    return centres * 0.05


def test_agile_picks_the_slab_interior_when_surrounded() -> None:
    # A 1 m x 1 m x 5 cm slab = voxels (i, j, 0), i, j in 0..19, inside a 10 cm frame of other
    # points (voxels -2..21 not in the slab). Clearance of slab voxel (i, j) is
    # min(i + 1, 20 - i, j + 1, 20 - j), largest (10) at i, j in {9, 10}; the smallest of those
    # four voxels is (9, 9, 0), centred on (0.475, 0.475, 0.025).
    frame = _grid(range(-2, 22), range(-2, 22))
    inside = ((frame[:, :2] > 0) & (frame[:, :2] < 1)).all(1)
    coords = np.concatenate([_grid(range(20), range(20)), frame[~inside]])
    mask = np.arange(len(coords)) < 400
    click = choose_click(coords, mask, "agile")
    assert mask[click]
    np.testing.assert_allclose(coords[click], [0.475, 0.475, 0.025])


def test_agile_moves_away_from_a_neighbour_on_one_side() -> None:
    # The slab with another object at x in [1.0, 1.2): clearance of voxel (i, j) is 20 - i,
    # largest at i = 0; among j = 0..19 the smallest voxel is (0, 0, 0).
    slab, other = _grid(range(20), range(20)), _grid(range(20, 24), range(20))
    instance = np.repeat([3, -1], [len(slab), len(other)])
    click = sample_clicks(np.concatenate([slab, other]), instance, np.array([3]), "agile")
    np.testing.assert_array_equal(click, [0])


def test_agile_clicks_the_point_nearest_the_voxel_centre() -> None:
    # Two instance points share voxel (0, 0, 0) (centre 0.025, 0.025, 0.025); another object
    # sits in voxel (3, 0, 0). Point 1 is nearer that centre than point 0.
    coords = np.array([[0.001, 0.001, 0.001], [0.02, 0.03, 0.02], [0.17, 0.02, 0.02]])
    assert choose_click(coords, np.array([True, True, False]), "agile") == 1


def test_agile_alone_in_the_scene_falls_back_to_center() -> None:
    mask = np.ones(5, bool)
    assert choose_click(LINE, mask, "agile") == choose_click(LINE, mask, "center") == 3


def _agile_reference(coords: np.ndarray, mask: np.ndarray, voxel: float = 0.05) -> int:
    """AGILE3D's rule, written plainly: a KD-tree on every voxel holding a non-instance point."""
    cells = np.floor(coords / voxel)
    own = np.unique(cells[mask], axis=0)  # lexicographic order, as the ties require
    clearance, _ = cKDTree(np.unique(cells[~mask], axis=0)).query(own)
    centre = (own[np.argmax(clearance)] + 0.5) * voxel
    members = np.flatnonzero(mask)
    return int(members[np.argmin(((coords[members] - centre) ** 2).sum(1))])


def test_agile_matches_the_plain_rule() -> None:
    # Clustered objects plus one isolated far away (its nearest other voxel lies outside the
    # neighbourhood searched first).
    rng = np.random.default_rng(5)
    centres = np.concatenate([rng.uniform(0, 2, size=(5, 3)), [[9.0, 9.0, 9.0]]])
    instance = np.repeat(np.arange(6), 300)
    coords = centres[instance] + rng.uniform(-0.3, 0.3, size=(1800, 3))
    clicks = sample_clicks(coords, instance, np.arange(6), "agile")
    np.testing.assert_array_equal(clicks, [_agile_reference(coords, instance == k) for k in range(6)])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_click_lies_inside_its_instance(strategy: str) -> None:
    rng = np.random.default_rng(3)
    centres = rng.uniform(0, 4, size=(6, 3))
    instance = rng.integers(-1, 6, size=3000)
    coords = centres[instance.clip(0)] + rng.uniform(-0.4, 0.4, size=(3000, 3))
    coords[instance < 0] = rng.uniform(0, 4, size=((instance < 0).sum(), 3))
    wanted = np.array([5, 0, 3, 3])
    clicks = sample_clicks(coords, instance, wanted, strategy, rng=rng, rd=0.5)
    assert clicks.dtype == np.int64 and clicks.shape == (4,)
    np.testing.assert_array_equal(instance[clicks], wanted)
    assert sample_clicks(coords, instance, [], strategy, rng=rng).shape == (0,)
    if strategy not in ("random", "sampled"):  # per instance as with one mask
        expected = [choose_click(coords, instance == k, strategy, rd=0.5) for k in wanted]
        np.testing.assert_array_equal(clicks, expected)


def test_the_official_training_click_is_nearest_the_centroid_of_500_sampled_points() -> None:
    rng = np.random.default_rng(0)
    small = rng.uniform(0, 1, size=(40, 3))  # fewer than 500 points: all of them, = center
    assert sample_clicks(small, np.zeros(40, np.int64), [0], "sampled",
                         rng=np.random.default_rng(1))[0] == choose_click(small, np.ones(40, bool),
                                                                           "center")
    # 2000 points: the same draw of 500 (rng.choice without replacement), by hand
    coords = rng.uniform(0, 1, size=(2000, 3))
    instance = np.zeros(2000, np.int64)
    click = sample_clicks(coords, instance, [0], "sampled", rng=np.random.default_rng(7))[0]
    drawn = np.random.default_rng(7).choice(2000, 500, replace=False)
    centroid = coords[drawn].mean(0)
    assert click == drawn[np.argmin(((coords[drawn] - centroid) ** 2).sum(1))]


def test_errors() -> None:
    mask = np.ones(5, bool)
    with pytest.raises(ValueError, match="center, rd, random, agile, sampled"):
        choose_click(LINE, mask, "farthest")
    with pytest.raises(ValueError, match="empty mask"):
        choose_click(LINE, np.zeros(5, bool), "center")
    with pytest.raises(ValueError, match="empty mask"):
        sample_clicks(LINE, np.zeros(5, np.int64), np.array([0, 1]), "agile")
    with pytest.raises(ValueError, match="rng"):
        choose_click(LINE, mask, "random")
    with pytest.raises(ValueError, match="rd"):
        choose_click(LINE, mask, "rd", rd=1.5)


def test_clicks_do_not_import_torch() -> None:
    code = "import sys, uniseg3d.datasets.clicks; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
