"""K-nearest-point fill vs a per-pixel loop reference."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import importlib

from geodepth.models.classical.knn_fill import knn_fill

knn_mod = importlib.import_module("geodepth.models.classical.knn_fill")


def loop_reference(H, W, uvz, k, weighting, power=2.0, max_radius=None, ss=4.0, sc=0.1, eps=0.5, image=None):
    """Naive twin of knn_fill: for each pixel centre, sort all points by distance."""
    out = np.zeros((H, W))
    conf = np.zeros((H, W))
    for r in range(H):
        for c in range(W):
            q = np.array([c + 0.5, r + 0.5])
            d2 = ((uvz[:, :2] - q) ** 2).sum(1)
            order = np.argsort(d2, kind="stable")[:k]
            d2k, zk = d2[order], uvz[order, 2]
            keep = np.ones(len(order), bool) if max_radius is None else d2k <= max_radius ** 2
            if not keep[0]:
                continue
            d = np.sqrt(d2k)
            if weighting == "idw":
                w = np.maximum(d, eps) ** -power
            else:
                w = np.exp(-d2k / (2 * ss * ss))
                if image is not None:
                    pr = np.floor(uvz[order, 1]).astype(int)
                    pc = np.floor(uvz[order, 0]).astype(int)
                    diff = image[:, r, c][:, None] - image[:, pr, pc]
                    w = w * np.exp(-(diff ** 2).sum(0) / (2 * sc * sc))
                w = np.maximum(w, 1e-300)
            w = w * keep
            est = (w * zk).sum() / w.sum()
            var = (w * (zk - est) ** 2).sum() / w.sum()
            out[r, c] = est
            conf[r, c] = np.exp(-d2k[0] / (2 * ss * ss)) / (1 + np.sqrt(var) / est)
    return out, conf


def random_points(seed, H=14, W=19, n=25):
    g = np.random.default_rng(seed)
    return np.stack([g.random(n) * W, g.random(n) * H, g.random(n) * 30 + 2], 1)


@pytest.mark.parametrize("weighting", ["idw", "bilateral"])
@pytest.mark.parametrize(("k", "max_radius"), [(1, None), (4, None), (8, 3.0), (40, None)])
def test_points_vs_loop(weighting, k, max_radius):
    H, W = 14, 19
    uvz = random_points(k)
    g = np.random.default_rng(5)
    image = g.random((3, H, W))
    out, conf = knn_fill(size=(H, W), points_uvz=torch.from_numpy(uvz), k=k, weighting=weighting,
                         max_radius_px=max_radius, image=torch.from_numpy(image).float() if weighting == "bilateral" else None)
    ref, rconf = loop_reference(H, W, uvz, k, weighting, max_radius=max_radius,
                                image=np.float32(image).astype(np.float64) if weighting == "bilateral" else None)
    np.testing.assert_allclose(out[0].numpy(), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(conf[0].numpy(), rconf, rtol=1e-5, atol=1e-6)


def test_sparse_depth_uses_pixel_centres():
    H, W = 9, 12
    d = np.zeros((H, W), np.float32)
    d[2, 3], d[7, 10], d[5, 1] = 5.0, 9.0, 3.0
    out, _ = knn_fill(torch.from_numpy(d), k=3, max_radius_px=None)
    rc = np.argwhere(d > 0)
    uvz = np.stack([rc[:, 1] + 0.5, rc[:, 0] + 0.5, d[rc[:, 0], rc[:, 1]]], 1).astype(np.float64)
    ref, _ = loop_reference(H, W, uvz, 3, "idw")
    np.testing.assert_allclose(out[0].numpy(), ref, rtol=1e-6)


def test_cdist_fallback_matches_kdtree():
    g = np.random.default_rng(0)
    q = torch.from_numpy(g.random((300, 2)) * 50)
    p = torch.from_numpy(g.random((80, 2)) * 50)
    sq_a, idx_a = knn_mod._knn2d_fallback(q, p, 5)
    d2 = torch.cdist(q, p).square()
    sq_b, idx_b = torch.topk(d2, 5, dim=1, largest=False)
    np.testing.assert_allclose(sq_a.numpy(), sq_b.numpy(), rtol=1e-9)
    assert torch.equal(idx_a, idx_b)


def test_errors():
    d = torch.zeros(1, 4, 4)
    with pytest.raises(ValueError, match="weighting"):
        knn_fill(d, weighting="nope")
    with pytest.raises(ValueError, match="k must"):
        knn_fill(d, k=0)
    with pytest.raises(ValueError, match="points_uvz"):
        knn_fill(d, points_uvz=torch.zeros(3, 2))
    assert torch.equal(knn_fill(d)[0], d)  # no points: nothing to fill
