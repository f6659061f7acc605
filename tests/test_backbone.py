"""The spconv backbone against dense conv3d references, voxelisation and superpoint pooling."""

from __future__ import annotations

import pytest
import spconv.pytorch as spconv
import torch
import torch.nn.functional as F

from uniseg3d.model.backbone import (SparseUNet, conv_algorithm, point_features, scatter_mean,
                                     voxelize)

GRID = 8


@pytest.fixture
def sparse_input():
    torch.manual_seed(0)
    active = torch.rand(GRID, GRID, GRID) < 0.3
    coords = active.nonzero().int()
    features = torch.randn(len(coords), 2, dtype=torch.float64)
    indices = torch.cat([torch.zeros(len(coords), 1, dtype=torch.int32), coords], 1)
    dense = torch.zeros(1, 2, GRID, GRID, GRID, dtype=torch.float64)
    dense[0, :, coords[:, 0], coords[:, 1], coords[:, 2]] = features.T
    return spconv.SparseConvTensor(features, indices, [GRID] * 3, 1), dense, coords


def dense_weight(conv) -> torch.Tensor:
    """spconv stores (out, kx, ky, kz, in); conv3d wants (out, in, kx, ky, kz)."""
    return conv.weight.detach().permute(0, 4, 1, 2, 3)


def at(dense: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    return dense[0, :, coords[:, 0], coords[:, 1], coords[:, 2]].T


def test_cpu_uses_the_native_algorithm():
    assert conv_algorithm("cpu") == spconv.ConvAlgo.Native
    assert conv_algorithm("cuda") != spconv.ConvAlgo.Native


def test_submanifold_conv_matches_dense_conv3d(sparse_input):
    x, dense, coords = sparse_input
    conv = spconv.SubMConv3d(2, 3, 3, padding=1, bias=False, algo=spconv.ConvAlgo.Native).double()
    out = conv(x)
    expected = at(F.conv3d(dense, dense_weight(conv), padding=1), coords)
    assert torch.equal(out.indices, x.indices)  # submanifold: same active sites
    torch.testing.assert_close(out.features, expected, rtol=1e-10, atol=1e-10)


def test_strided_and_inverse_conv_match_dense(sparse_input):
    x, dense, coords = sparse_input
    down = spconv.SparseConv3d(2, 3, 2, stride=2, bias=False, indice_key="d",
                               algo=spconv.ConvAlgo.Native).double()
    up = spconv.SparseInverseConv3d(3, 2, 2, bias=False, indice_key="d",
                                    algo=spconv.ConvAlgo.Native).double()
    mid = down(x)
    dense_mid = F.conv3d(dense, dense_weight(down), stride=2)
    torch.testing.assert_close(mid.features, at(dense_mid, mid.indices[:, 1:].long()))
    # the active coarse sites are exactly those whose 2x2x2 block holds an active fine site
    expected_sites = torch.unique(coords.long() // 2, dim=0)
    assert torch.equal(torch.unique(mid.indices[:, 1:].long(), dim=0), expected_sites)
    back = up(mid)
    # inverse conv = transposed conv restricted to the original active sites; a zero-padded
    # dense tensor of the coarse result reproduces it
    coarse = torch.zeros(1, 3, GRID // 2, GRID // 2, GRID // 2, dtype=torch.float64)
    ci = mid.indices[:, 1:].long()
    coarse[0, :, ci[:, 0], ci[:, 1], ci[:, 2]] = mid.features.T
    weight = up.weight.detach().permute(4, 0, 1, 2, 3)  # (in, out, k, k, k) for conv_transpose
    expected = at(F.conv_transpose3d(coarse, weight, stride=2), back.indices[:, 1:].long())
    torch.testing.assert_close(back.features, expected)
    assert torch.equal(back.indices, x.indices)


def test_voxelize_means_and_maps_points_back():
    coords = [torch.tensor([[0.0, 0, 0], [0.01, 0.01, 0], [0.05, 0, 0]]),
              torch.tensor([[1.0, 1, 1]])]
    feats = [torch.tensor([[1.0], [3.0], [5.0]]), torch.tensor([[7.0]])]
    voxels = voxelize(coords, feats, 0.02)
    assert voxels.batch_size == 2 and len(voxels.features) == 3
    per_point = voxels.features[voxels.point_to_voxel]
    assert per_point[:, 0].tolist() == [2.0, 2.0, 5.0, 7.0]
    assert voxels.indices[voxels.point_to_voxel][:, 0].tolist() == [0, 0, 0, 1]


def test_scatter_mean_and_point_features():
    values = torch.tensor([[1.0, 2], [3, 4], [5, 6]])
    torch.testing.assert_close(scatter_mean(values, torch.tensor([1, 1, 0]), 3),
                               torch.tensor([[5.0, 6], [2, 3], [0, 0]]))
    f = point_features(torch.tensor([[0.0, 0, 0], [2, 2, 2]]), torch.tensor([[0, 127, 255]] * 2))
    torch.testing.assert_close(f[0], torch.tensor([-1.0, 127 / 127.5 - 1, 1.0, -1, -1, -1]))


def test_unet_pools_per_superpoint_and_is_deterministic():
    torch.manual_seed(0)
    net = SparseUNet(channels=(8, 16, 24), blocks=1).eval()
    coords = torch.rand(3000, 3) * 2
    colors = torch.randint(0, 256, (3000, 3), dtype=torch.uint8)
    sp = torch.randint(0, 40, (3000,))
    with torch.no_grad():
        a = net([coords], [colors], [sp])[0]
        b = net([coords], [colors], [sp])[0]
    assert a.shape == (40, 8)
    assert torch.equal(a, b)


def test_no_voxel_is_lost_at_odd_grid_boundaries():
    # a scene whose grid is 3 voxels wide: an unpadded 3-wide grid would drop the last row in
    # the stride-2 convolution, so a scene alone and the same scene beside a larger one differ
    torch.manual_seed(0)
    net = SparseUNet(channels=(4, 8, 8), blocks=1).eval()
    small = torch.tensor([[0.0, 0, 0], [0.02, 0, 0], [0.045, 0, 0], [0.045, 0.01, 0.0]])
    large = torch.rand(200, 3) * 1.0
    colors = [torch.randint(0, 256, (len(small), 3), dtype=torch.uint8),
              torch.randint(0, 256, (len(large), 3), dtype=torch.uint8)]
    sp = [torch.arange(len(small)), torch.zeros(len(large), dtype=torch.long)]
    voxels = voxelize([small], [point_features(small, colors[0])], 0.02)
    assert all(s % 32 == 0 for s in voxels.spatial_shape)
    with torch.no_grad():
        alone = net([small], colors[:1], sp[:1])[0]
        batched = net([small, large], colors, sp)[0]
    torch.testing.assert_close(alone, batched, rtol=1e-5, atol=1e-6)
