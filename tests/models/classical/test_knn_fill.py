"""K-nearest-point fill vs a per-pixel loop reference."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import importlib

from geodepth.models.classical.knn_fill import knn_fill

knn_mod = importlib.import_module("geodepth.models.classical.knn_fill")

try:
    import numba  # noqa: F401

    BACKENDS = ["torch", "numba"]
except ImportError:  # pragma: no cover - numba is in the test extras
    BACKENDS = ["torch"]
needs_numba = pytest.mark.skipif("numba" not in BACKENDS, reason="needs numba")


def naive_limits(uv, H, W, nearest=None):
    """Naive twin of knn_fill's limits as the docstrings define them (brute-force distances,
    loops): ``(top (W,), bottom (W,), gap, auto radius, first filled row (W,) of
    extrapolate=False)``. Constants: nearest-neighbour spacing over every ceil(N / 4096)-th point
    (torch's lower median), column neighbourhood ceil(4 a), lattice of ceil(sqrt(H W / 2^13)),
    99.9 % order statistic, radius max(50, 2 g), margin ceil(g / 2). ``nearest(q, k)``: the
    ascending distances from rows q to their k nearest of ``uv`` (default: brute force; for
    clouds too big for that, scipy's cKDTree)."""
    if nearest is None:
        def nearest(q, k):
            return np.sort(np.sqrt(((q[:, None, :] - uv[None]) ** 2).sum(-1)), axis=1)[:, :k]
    n = len(uv)
    if n < 2:
        w = W
    else:
        q = uv[::int(np.ceil(n / 4096))]
        d = nearest(q, 2)[:, 1]
        a = np.sort(d)[(len(d) - 1) // 2]
        w = int(min(W, max(1, np.ceil(4 * a))))
    col = np.clip(np.floor(uv[:, 0]).astype(int), 0, W - 1)
    row = np.clip(np.floor(uv[:, 1]).astype(int), 0, H - 1)
    top = np.full(W, H)
    bottom = np.full(W, -1)
    for c in range(W):
        near = np.abs(col - c) <= w
        if near.any():
            top[c], bottom[c] = row[near].min(), row[near].max()
    s = int(np.ceil(np.sqrt(H * W / 2 ** 13)))
    lattice = np.array([[c + 0.5, r + 0.5] for r in range(0, H, s) for c in range(0, W, s)
                        if top[c] <= r <= bottom[c]]).reshape(-1, 2)
    d1 = nearest(lattice, 1)[:, 0] if len(lattice) else []
    gap = float(np.sort(d1)[int(np.ceil(0.999 * len(d1))) - 1]) if len(d1) else 0.0
    first = np.where(top < H, np.maximum(top - int(np.ceil(gap / 2)), 0), 0)
    return top, bottom, gap, max(50.0, 2 * gap), first


def loop_reference(H, W, uvz, k, weighting, power=2.0, max_radius=None, ss=4.0, sc=0.1, eps=0.5, image=None,
                   extrapolate=True):
    """Naive twin of knn_fill: for each pixel centre, sort all points by distance. ``max_radius``
    "auto" and ``extrapolate=False`` follow :func:`naive_limits`."""
    out = np.zeros((H, W))
    conf = np.zeros((H, W))
    top, _, _, auto, first = naive_limits(uvz[:, :2], H, W)
    if max_radius == "auto":
        max_radius = auto
    if extrapolate:
        first = np.zeros(W, int)
    for r in range(H):
        for c in range(W):
            if r < first[c]:
                continue
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


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("weighting", ["idw", "bilateral"])
@pytest.mark.parametrize(("k", "max_radius", "extrapolate"), [
    (1, None, True), (4, None, False), (8, 3.0, False), (8, 3.0, True), (40, None, False), (6, "auto", False),
    (6, "auto", True)])
def test_points_vs_loop(weighting, k, max_radius, extrapolate, backend):
    H, W = 14, 19
    uvz = random_points(k)
    g = np.random.default_rng(5)
    image = g.random((3, H, W))
    img = torch.from_numpy(image).float() if weighting == "bilateral" else None
    out, conf = knn_fill(size=(H, W), points_uvz=torch.from_numpy(uvz), k=k, weighting=weighting,
                         max_radius_px=max_radius, extrapolate=extrapolate, image=img, backend=backend)
    ref, rconf = loop_reference(H, W, uvz, k, weighting, max_radius=max_radius, extrapolate=extrapolate,
                                image=np.float32(image).astype(np.float64) if weighting == "bilateral" else None)
    np.testing.assert_allclose(out[0].numpy(), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(conf[0].numpy(), rconf, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_depth_uses_pixel_centres(backend):
    H, W = 9, 12
    d = np.zeros((H, W), np.float32)
    d[2, 3], d[7, 10], d[5, 1] = 5.0, 9.0, 3.0
    out, _ = knn_fill(torch.from_numpy(d), k=3, max_radius_px=None, backend=backend)
    rc = np.argwhere(d > 0)
    uvz = np.stack([rc[:, 1] + 0.5, rc[:, 0] + 0.5, d[rc[:, 0], rc[:, 1]]], 1).astype(np.float64)
    ref, _ = loop_reference(H, W, uvz, 3, "idw")
    np.testing.assert_allclose(out[0].numpy(), ref, rtol=1e-6)


def test_cpu_search_is_exact_with_index_ties():
    """The torch path's CPU search (geodepth.ops.knn in float64) against a brute-force stable
    sort, on lattice points where distances tie."""
    uvz = _lattice_points(17, 29, 3, 0)
    rr, cc = np.meshgrid(np.arange(17), np.arange(29), indexing="ij")
    q = torch.from_numpy(np.stack([cc.ravel() + 0.5, rr.ravel() + 0.5], 1))
    p = torch.from_numpy(uvz[:, :2].copy())
    sq, idx = knn_mod._knn2d(q, p, 7)
    d2 = ((q[:, None, :] - p[None]) ** 2).sum(-1)
    ref_sq, ref_idx = torch.sort(d2, dim=1, stable=True)
    assert torch.equal(idx, ref_idx[:, :7])
    assert torch.equal(sq, ref_sq[:, :7])


def test_errors():
    d = torch.zeros(1, 4, 4)
    with pytest.raises(ValueError, match="weighting"):
        knn_fill(d, weighting="nope")
    with pytest.raises(ValueError, match="k must"):
        knn_fill(d, k=0)
    with pytest.raises(ValueError, match="points_uvz"):
        knn_fill(d, points_uvz=torch.zeros(3, 2))
    assert torch.equal(knn_fill(d)[0], d)  # no points: nothing to fill


def _lattice_points(H, W, step, seed):
    """Points at pixel centres every ``step`` pixels (many exact ties between distances), with
    some duplicated positions carrying different depths."""
    g = np.random.default_rng(seed)
    rr, cc = np.meshgrid(np.arange(1, H, step), np.arange(0, W, step), indexing="ij")
    uv = np.stack([cc.ravel() + 0.5, rr.ravel() + 0.5], 1)
    dup = uv[g.choice(len(uv), len(uv) // 4, replace=False)]
    uv = np.concatenate([uv, dup])
    z = g.random(len(uv)) * 20 + 1
    perm = g.permutation(len(uv))
    return np.concatenate([uv, z[:, None]], 1)[perm]


@needs_numba
@pytest.mark.parametrize("weighting", ["idw", "bilateral"])
@pytest.mark.parametrize(("k", "max_radius"), [(5, None), (8, 4.0), (3, 1.0)])
def test_numba_ties_go_to_smaller_index(weighting, k, max_radius):
    """Distances tie everywhere on a lattice: the numba backend keeps, among points as far as
    the k-th, the smaller indices, as the stable brute-force twin does."""
    H, W = 23, 37
    uvz = _lattice_points(H, W, 3, k)
    image = np.random.default_rng(1).random((3, H, W)).astype(np.float32)
    img = torch.from_numpy(image) if weighting == "bilateral" else None
    out, conf = knn_fill(size=(H, W), points_uvz=torch.from_numpy(uvz), k=k, weighting=weighting,
                         max_radius_px=max_radius, image=img, backend="numba")
    ref, rconf = loop_reference(H, W, uvz, k, weighting, max_radius=max_radius,
                                image=image.astype(np.float64) if img is not None else None)
    np.testing.assert_allclose(out[0].numpy(), ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(conf[0].numpy(), rconf, rtol=1e-6, atol=1e-7)


def _band_points(H, W, n, seed):
    """LiDAR-like: points only in the lower rows, denser near the bottom, some on the right and
    bottom borders of the image."""
    g = np.random.default_rng(seed)
    u = g.random(n) * W
    v = H - 1e-9 - (H * 0.45) * g.random(n) ** 2
    u[:3] = W - 1e-9
    z = g.random(n) * 50 + 1
    return np.stack([u, v, z], 1)


@needs_numba
@pytest.mark.parametrize(("H", "W", "n", "k", "max_radius"), [
    (31, 45, 60, 8, 6.0),    # top rows farther than the radius from every point: 0
    (31, 45, 60, 8, None),   # ... filled from far away without it
    (13, 9, 5, 8, None),     # fewer points than k
    (1, 1, 4, 2, None),      # one pixel
    (1, 23, 3, 16, 2.5),     # one row, k > n, bounded
])
def test_numba_band_and_edges_vs_loop(H, W, n, k, max_radius):
    uvz = _band_points(H, W, n, n + k)
    image = np.random.default_rng(2).random((3, H, W)).astype(np.float32)
    out, conf = knn_fill(size=(H, W), points_uvz=torch.from_numpy(uvz), k=k, weighting="bilateral",
                         max_radius_px=max_radius, image=torch.from_numpy(image), backend="numba")
    ref, rconf = loop_reference(H, W, uvz, k, "bilateral", max_radius=max_radius, image=image.astype(np.float64))
    np.testing.assert_allclose(out[0].numpy(), ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(conf[0].numpy(), rconf, rtol=1e-6, atol=1e-7)
    if max_radius is not None and H > 20:
        assert (out[0, :5] == 0).all() and (out[0] > 0).any()  # the bound bites


@needs_numba
@pytest.mark.parametrize("s", [2, 5, 64])
def test_numba_cell_size_does_not_change_the_result(monkeypatch, s):
    """The cell edge is a speed choice only: forced small or large cells give the same bits."""
    nb = importlib.import_module("geodepth.models.classical._numba_knn_fill")
    uvz = torch.from_numpy(_band_points(40, 70, 300, 3))
    args = dict(size=(40, 70), points_uvz=uvz, k=6, max_radius_px=9.0, backend="numba")
    want = knn_fill(**args)
    monkeypatch.setattr(nb, "cell_size", lambda n, H, W, k: s)
    got = knn_fill(**args)
    assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])


@needs_numba
@pytest.mark.parametrize("weighting", ["idw", "bilateral"])
@pytest.mark.parametrize(("source", "max_radius", "extrapolate"), [
    ("points", "auto", False), ("points", None, True), ("sparse", 50.0, False), ("sparse", "auto", True)])
def test_numba_matches_torch_path_on_kitti(weighting, source, max_radius, extrapolate):
    """The real KITTI frame (19k projected LiDAR points or the 19k-pixel sparse depth map, 466k
    pixel queries): the numba backend against the torch path (geodepth.ops.knn's exact search,
    torch weighting); float64 on both, so they differ by summation order only."""
    import geodepth

    frame = geodepth.load_frame(geodepth.sample_dir())
    uvz = None
    if source == "points":
        uv, z = frame.camera.project(frame.points_cam)
        uvz = torch.cat([uv, z[:, None]], 1)
    kw = dict(points_uvz=uvz, image=frame.image, weighting=weighting, max_radius_px=max_radius,
              extrapolate=extrapolate)
    a, ca = knn_fill(frame.sparse_depth, backend="numba", **kw)
    b, cb = knn_fill(frame.sparse_depth, backend="torch", **kw)
    # extrapolate=False leaves the ~60k pixels above the scan (rows 0 to ~140) at 0
    assert torch.equal(a > 0, b > 0) and int((a > 0).sum()) > (300_000 if extrapolate else 270_000)
    if not extrapolate:
        assert int((a[0, :100] > 0).sum()) == 0
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=2e-7, atol=0)
    np.testing.assert_allclose(ca.numpy(), cb.numpy(), rtol=2e-7, atol=1e-7)


@pytest.mark.parametrize(("kw", "match"), [
    (dict(k=True), "k must be an int"),
    (dict(k=2 ** 63), "k must be an int"),
    (dict(power=float("inf")), "power must be a finite number"),
    (dict(power="2"), "power must be a finite number"),
    (dict(max_radius_px="5"), "max_radius_px must be a finite number > 0, None or 'auto', got '5'"),
    (dict(max_radius_px="Auto"), "max_radius_px must be .* or 'auto', got 'Auto'"),
    (dict(max_radius_px=float("nan")), "max_radius_px must be a finite number"),
    (dict(max_radius_px=0), "max_radius_px must be a finite number > 0, None or 'auto', got 0"),
    (dict(extrapolate="no"), "extrapolate must be True or False, got 'no'"),
    (dict(extrapolate=None), "extrapolate must be True or False"),
    (dict(eps=1e-300), "overflows the weights"),
    (dict(weighting="bilateral", sigma_space=1e-200), "sigma_space .* too small"),
    (dict(weighting="bilateral", sigma_color=1e-200), "sigma_color .* too small"),
])
def test_parameters_that_would_give_nan_or_crash(kw, match):
    """Each of these returned all-NaN depths or crashed inside numba / torch before."""
    d = torch.zeros(1, 6, 7)
    d[0, 2, 3] = 4.0
    with pytest.raises(ValueError, match=match):
        knn_fill(d, **kw)


def test_size_errors():
    pts = torch.tensor([[1.0, 1.0, 2.0]])
    for size in [(0, 5), (-1, 3), (4,), "ab"]:
        with pytest.raises(ValueError, match="size"):
            knn_fill(size=size, points_uvz=pts)


def test_backend_errors():
    d = torch.zeros(1, 4, 4)
    d[0, 1, 1] = 3.0
    with pytest.raises(ValueError, match="backend"):
        knn_fill(d, backend="opencv")


# --- the CUDA path's search: float32 (Triton) refined to the float64 lists -------------------

def _f64_lists(q, p, k, bound=float("inf")):
    return knn_mod._knn2d_exact(q, p, k, bound, torch.float64)


def _pixel_queries(H, W):
    rr, cc = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    return torch.from_numpy(np.stack([cc.ravel() + 0.5, rr.ravel() + 0.5], 1).astype(np.float64))


def _same_lists(got, want, bound=float("inf")):
    """Equal (sqdist, idx) wherever the float64 neighbour lies within ``bound`` (beyond it the
    caller drops neighbours, and a bounded search may return others there)."""
    keep = want[0] <= bound
    assert torch.equal(got[0][keep], want[0][keep]) and torch.equal(got[1][keep], want[1][keep])
    assert bool((got[0][~keep] > bound).all())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("k", "bound"), [(1, float("inf")), (8, float("inf")), (8, 9.0), (16, 30.0)])
def test_refined_float32_search_gives_the_float64_lists(seed, k, bound):
    g = np.random.default_rng(seed)
    p = torch.from_numpy(np.stack([g.random(400) * 613.7, g.random(400) * 187.3], 1))
    q = _pixel_queries(40, 120) * torch.tensor([5.1, 4.7], dtype=torch.float64)
    want = _f64_lists(q, p, k, bound)
    _same_lists(knn_mod._knn2d_refined(q, p, k, bound), want, bound)


def test_refined_search_reranks_float32_ties():
    """Two points one float32 apart from nothing: float32 ties them and keeps the smaller index,
    float64 sees that the larger index is nearer."""
    p = torch.tensor([[10.3, 5.7], [10.3 - 1e-9, 5.7], [40.0, 40.0]], dtype=torch.float64)
    q = torch.tensor([[2.5, 5.5], [30.5, 5.5]], dtype=torch.float64)
    sq32, i32 = knn_mod._knn2d_exact(q, p, 1, dtype=torch.float32)
    assert i32[0, 0] == 0 and i32[1, 0] == 0  # float32: a tie, to the smaller index
    sq, idx = knn_mod._knn2d_refined(q, p, 1)
    assert idx.flatten().tolist() == [1, 0]  # float64: index 1 is nearer from the left
    assert torch.equal(sq, _f64_lists(q, p, 1)[0])


@pytest.mark.parametrize("x0", [10.3, 1003.3])  # far from the origin, coordinate rounding dominates
def test_refined_search_redoes_rows_it_cannot_prove(monkeypatch, x0):
    """Ten points closer together than float32 can tell, the float64 nearest at the largest
    indices: the k + _EXTRA float32 candidates (the smallest indices) miss them, the proof fails,
    and those rows are searched again in float64. Eight queries, so that float32 rounds the
    tied distance up for some (a proof without its rounding margin would accept those rows)."""
    n = 10
    x = x0 + (n - 1 - np.arange(n)) * 1e-9  # larger index: smaller x
    far = x0 + np.array([290.0, 291.0, 292.0])
    p = torch.from_numpy(np.stack([np.concatenate([x, far]), np.full(n + 3, 5.7)], 1))
    qx = np.concatenate([x0 - 7.8 + np.arange(8) * 0.37, far[0] - np.array([49.8, 0.8])])
    q = torch.from_numpy(np.stack([qx, np.full(len(qx), 5.5)], 1))
    d32 = ((q.float()[:, None] - p.float()[None]) ** 2).sum(-1)[:8, 0].double()
    d64 = ((q[:, None] - p[None]) ** 2).sum(-1)[:8, 0]
    assert bool((d32 > d64).any()) and bool((d32 < d64).any())  # rounded up for some, down for others
    calls = []
    real = knn_mod._knn2d_exact

    def spy(query, points, k, max_sqdist=float("inf"), dtype=torch.float32):
        calls.append((query.shape[0], dtype))
        return real(query, points, k, max_sqdist, dtype)

    monkeypatch.setattr(knn_mod, "_knn2d_exact", spy)
    got = knn_mod._knn2d_refined(q, p, 3)
    want = real(q, p, 3, dtype=torch.float64)
    assert got[1][:8].tolist() == [[9, 8, 7]] * 8 and torch.equal(got[1], want[1]) and torch.equal(got[0], want[0])
    # one float32 search, then only the eight rows facing the cluster in float64 (the other two
    # queries' three nearest, ``far``, are clear of it)
    assert calls == [(10, torch.float32), (8, torch.float64)]


def test_refined_search_keeps_points_float32_pushes_past_the_bound():
    """A point within max_sqdist = 9 in float64 (squared distance 9 - 5e-6) whose float32
    coordinates land beyond it (9 + 2**-20): the float32 search gets a bound widened by the
    rounding error, so the point stays."""
    q = torch.tensor([[1000.5, 0.5]], dtype=torch.float64)
    p = torch.tensor([[1003.5 - 1e-6, 0.5 + 2.0 ** -10], [1010.5, 0.5]], dtype=torch.float64)
    assert float(((q - p[:1]) ** 2).sum()) <= 9.0
    assert float(((q.float() - p[:1].float()) ** 2).sum()) > 9.0
    assert knn_mod._knn2d_exact(q, p, 1, 9.0, torch.float32)[1].item() == -1  # float32 alone loses it
    sq, idx = knn_mod._knn2d_refined(q, p, 1, 9.0)
    assert idx.item() == 0 and sq.item() == float(((q - p[:1]) ** 2).sum())


@pytest.mark.parametrize("max_radius", [50.0, None])
def test_cuda_search_path_on_kitti_points_matches_numba(exact_cpu_knn2d, max_radius):
    """The CUDA path's algorithm (float32 search refined to float64, torch weighting) run on the
    CPU with the projected KITTI points (continuous u, v): the same neighbours as the numba
    backend's float64 search, so the depths agree to summation order."""
    import geodepth

    frame = geodepth.load_frame(geodepth.sample_dir())
    uv, z = frame.camera.project(frame.points_cam)
    uvz = torch.cat([uv, z[:, None]], 1)
    H, W = frame.sparse_depth.shape[-2:]
    q = _pixel_queries(H, W)
    inside = (uvz[:, 2] > 0) & (uvz[:, 0] >= 0) & (uvz[:, 0] < W) & (uvz[:, 1] >= 0) & (uvz[:, 1] < H)
    p = uvz[inside, :2].to(torch.float64)
    bound = float("inf") if max_radius is None else max_radius ** 2
    want = _f64_lists(q, p, 8, bound)
    got = knn_mod._knn2d(q, p, 8, bound)  # float32 search: the fixture set _CPU_FLOAT as on CUDA
    _same_lists(got, want, bound)
    if max_radius is None:  # float32's own lists differ here (near-ties among far neighbours)
        assert not torch.equal(knn_mod._knn2d_exact(q, p, 8, bound, torch.float32)[1], want[1])
    a, ca = knn_fill(frame.sparse_depth, points_uvz=uvz, max_radius_px=max_radius, extrapolate=True, backend="torch")
    assert int((a > 0).sum()) > 300_000
    if "numba" in BACKENDS:  # the fixture turned knn_fill's numba choice off: call the backend
        from geodepth.models.classical._numba_knn_fill import knn_fill_numba

        b, cb = knn_fill_numba(p.numpy(), uvz[inside, 2].double().numpy(), None, H, W, 8, True, 2.0, 0.5,
                               4.0, 0.1, max_radius)
        np.testing.assert_allclose(a[0].numpy(), b, rtol=2e-7, atol=0)
        np.testing.assert_allclose(ca[0].numpy(), cb, rtol=2e-7, atol=1e-7)


@pytest.mark.cuda
@pytest.mark.parametrize("max_radius", [50.0, None])
def test_cuda_points_match_the_cpu_float64_neighbours(max_radius):
    """On the GPU, the projected KITTI points (continuous u, v): the refined float32 search gives
    the float64 lists, so CUDA and the CPU backend (numba or torch, float64) agree to rounding."""
    import geodepth

    frame = geodepth.load_frame(geodepth.sample_dir())
    uv, z = frame.camera.project(frame.points_cam)
    uvz = torch.cat([uv, z[:, None]], 1)
    kw = dict(points_uvz=uvz, image=frame.image, weighting="bilateral", max_radius_px=max_radius)
    a, ca = knn_fill(frame.sparse_depth, **kw)
    b, cb = knn_fill(frame.sparse_depth.cuda(), **{**kw, "points_uvz": uvz.cuda(), "image": frame.image.cuda()})
    assert b.is_cuda and torch.equal(a > 0, b.cpu() > 0)
    np.testing.assert_allclose(b.cpu().numpy(), a.numpy(), rtol=1e-6, atol=0)
    np.testing.assert_allclose(cb.cpu().numpy(), ca.numpy(), rtol=1e-6, atol=1e-7)


# --- where the fill stops: the scan's own spacing (max_radius_px="auto", extrapolate=False) -----
@pytest.mark.parametrize("case", ["random", "band", "lattice", "one", "two_same"])
def test_limits_vs_naive_twin(case):
    """column_span and scan_gap (knn_fill's limits) against the brute-force twin of their
    definitions, on scattered, LiDAR-like, tie-heavy (duplicated lattice) and degenerate points."""
    H, W = {"random": (14, 19), "band": (31, 45), "lattice": (23, 37), "one": (9, 12), "two_same": (9, 12)}[case]
    uvz = {"random": lambda: random_points(3, H, W, 40), "band": lambda: _band_points(H, W, 80, 1),
           "lattice": lambda: _lattice_points(H, W, 3, 2), "one": lambda: np.array([[4.2, 6.7, 3.0]]),
           "two_same": lambda: np.array([[4.5, 6.5, 3.0], [4.5, 6.5, 5.0]])}[case]()
    top, bottom, gap, _, _ = naive_limits(uvz[:, :2], H, W)
    uv = torch.from_numpy(np.ascontiguousarray(uvz[:, :2]))
    t, b, _ = knn_mod.column_span(uv, H, W)
    assert t.tolist() == top.tolist() and b.tolist() == bottom.tolist()
    assert knn_mod.scan_gap(uv, t, b, H, W) == pytest.approx(gap, rel=1e-12, abs=0)


def _sim_frame(spec, W, H, fov_deg):
    from geodepth.data.synthetic import simulate_frame
    from geodepth.geometry import PinholeCamera

    f = 0.5 * W / np.tan(np.radians(fov_deg) / 2)
    K = torch.tensor([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1.0]], dtype=torch.float64)
    return simulate_frame(seed=0, sensor=spec, camera=PinholeCamera(K, W, H))


@pytest.fixture(scope="module")
def sparse_rig_frame():
    """A sparse LiDAR (5 beams 7 degrees apart, 900 firings) on a 640 x 480 camera with a 40 degree
    field of view: scan lines ~110 px apart, wider than twice the former fixed 50 px radius."""
    from geodepth.data.synthetic import LidarSpec

    return _sim_frame(LidarSpec("sparse5", (-14.0, -7.0, 0.0, 7.0, 14.0), 900, 100.0), 640, 480, 40.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_auto_radius_bridges_sparse_scan_lines(sparse_rig_frame, backend):
    """Against the simulator's exact depth: with the fixed 50 px radius, bands of pixels between
    the scan lines (truth > 0) stayed 0; the default radius from the scan's gap fills every pixel
    between the highest and lowest return of its column neighbourhood, and more accurately there
    than the nearest return's depth alone would be."""
    fr = sparse_rig_frame
    gt = fr.meta["dense_depth"][0]
    H, W = gt.shape
    rc = torch.nonzero(fr.sparse_depth[0] > 0)
    uv = (torch.stack([rc[:, 1], rc[:, 0]], 1) + 0.5).double().numpy()
    top, bottom, gap, auto, _ = naive_limits(uv, H, W)
    assert 50 < gap and auto == 2 * gap  # the lines are farther apart than KITTI's radius bridges
    rows = np.arange(H)[:, None]
    inside = torch.from_numpy((rows >= top[None]) & (rows <= bottom[None]))
    holes = lambda d: int(((gt > 0) & (d[0] == 0) & inside).sum())  # noqa: E731
    fixed, _ = knn_fill(fr.sparse_depth, max_radius_px=50.0, backend=backend)
    out, _ = knn_fill(fr.sparse_depth, backend=backend)
    assert holes(fixed) > 10_000 and holes(out) == 0
    near, _ = knn_fill(fr.sparse_depth, k=1, backend=backend)
    band = (gt > 0) & (fixed[0] == 0) & inside  # the pixels the fixed radius left empty
    assert float((out[0] - gt)[band].abs().mean()) < float((near[0] - gt)[band].abs().mean())


@pytest.mark.parametrize("case", ["kitti", "sparse_rig"])
def test_auto_limits_build_one_kdtree(monkeypatch, sparse_rig_frame, case):
    """The limits of max_radius_px="auto" / extrapolate=False search one k-d tree over the points
    for the spacing and the gap (they built two, ~1 ms of ~4.5 ms on KITTI), and stay exactly the
    twin's computed with scipy's cKDTree: radius, gap and first rows on the KITTI map and on the
    sparse simulated rig (continuous points_uvz); the fill equals one given that radius."""
    pytest.importorskip("pykdtree")
    from scipy.spatial import cKDTree

    import pykdtree.kdtree

    if case == "kitti":
        import geodepth

        depth = geodepth.load_frame(geodepth.sample_dir()).sparse_depth
        rc = torch.nonzero(depth[0] > 0)
        uvz = torch.cat([torch.stack([rc[:, 1], rc[:, 0]], 1) + 0.5, depth[0][rc[:, 0], rc[:, 1]][:, None]], 1).double()
        kw = dict()
    else:
        fr = sparse_rig_frame
        uv, z = fr.camera.project(fr.points_cam)
        depth = fr.sparse_depth
        H, W = depth.shape[-2:]
        uvz = torch.cat([uv, z[:, None]], 1).double()
        uvz = uvz[(uvz[:, 2] > 0) & (uvz[:, 0] >= 0) & (uvz[:, 0] < W) & (uvz[:, 1] >= 0) & (uvz[:, 1] < H)]
        kw = dict(points_uvz=uvz)
    H, W = depth.shape[-2:]
    uv = uvz[:, :2].numpy()
    tree = cKDTree(uv)
    _, _, gap, radius, first = naive_limits(uv, H, W, lambda q, k: tree.query(q, k=k)[0].reshape(len(q), k))
    built = []

    class Counting(pykdtree.kdtree.KDTree):
        def __init__(self, *a, **k):
            built.append(1)
            super().__init__(*a, **k)

    monkeypatch.setattr(pykdtree.kdtree, "KDTree", Counting)
    for extrapolate in (True, False):
        built.clear()
        r, top = knn_mod._fill_limits(uvz[:, :2], H, W, "auto", extrapolate)
        assert len(built) == 1
        assert r == radius and radius == max(50.0, 2 * gap)
        assert top.tolist() == (first.tolist() if not extrapolate else [0] * W)
    assert radius > 100 if case == "sparse_rig" else radius == 50.0  # (KITTI: the 50 px floor)
    out, conf = knn_fill(depth, **kw)
    want, want_c = knn_fill(depth, **kw, max_radius_px=radius)
    assert torch.equal(out, want) and torch.equal(conf, want_c)


@pytest.mark.parametrize("method", ["knn_idw", "knn_bilateral"])
def test_no_depth_invented_above_the_scan(method):
    """Against the simulator's exact depth (0 where a camera ray hits nothing: the sky): with
    extrapolate=False the KNN methods leave the rows above the scan empty (IP-Basic's option), so
    almost no depth lands where the truth has none (the rest within the margin of half the scan's
    gap above its top return); the default (extrapolate=True) fills the sky up to the radius."""
    import geodepth
    from geodepth.data.synthetic import kitti_camera, simulate_frame

    fr = simulate_frame(seed=0, sensor="vlp16", camera=kitti_camera(621, 188))
    gt = fr.meta["dense_depth"][0]
    sky = gt == 0
    assert int(sky.sum()) > 3000
    out = geodepth.complete(fr, method=method, extrapolate=False).depth[0]
    default = geodepth.complete(fr, method=method).depth[0]
    assert torch.equal(default, geodepth.complete(fr, method=method, extrapolate=True).depth[0])
    assert int((default > 0)[sky].sum()) > 0.9 * int(sky.sum())  # the whole sky, by default
    assert int((out > 0)[sky].sum()) < 0.06 * int(sky.sum())
    # every filled pixel is at most ceil(gap / 2) rows above the top return of its neighbourhood
    rc = torch.nonzero(fr.sparse_depth[0] > 0)
    uv = (torch.stack([rc[:, 1], rc[:, 0]], 1) + 0.5).double().numpy()
    _, _, _, _, first = naive_limits(uv, *gt.shape)
    assert first.max() > 20  # a sizeable region is above the scan
    rows = torch.arange(gt.shape[0])[:, None]
    cut = rows < torch.from_numpy(first)[None]
    assert int((out > 0)[cut].sum()) == 0
    assert torch.equal(out[~cut], default[~cut])  # below the cut, extrapolate=False changes nothing


def test_default_keeps_the_surfaces_above_the_top_beam():
    """Why extrapolate defaults to True: with an HDL-64 (top beam 2 degrees up) the simulated
    buildings rise above the scan, and cutting at the top return drops far more real surface than
    sky. Against the simulator's exact depth: the default fills those surface pixels, and there
    scores better than leaving them empty and filling the holes as the KITTI devkit does."""
    import geodepth
    from geodepth.data.synthetic import simulate_frame
    from geodepth.metrics import interpolate_background

    fr = simulate_frame(seed=0, sensor="hdl64")
    gt = fr.meta["dense_depth"][0]
    default = geodepth.complete(fr, method="knn_idw").depth[0]
    cut = geodepth.complete(fr, method="knn_idw", extrapolate=False).depth[0]
    dropped = (default > 0) & (cut == 0)
    surface, sky = int((dropped & (gt > 0)).sum()), int((dropped & (gt == 0)).sum())
    assert surface > 5 * sky and surface > 20_000
    both = dropped & (gt > 0)
    err_default = float((default - gt)[both].abs().mean())
    err_cut = float((interpolate_background(cut[None])[0] - gt)[both].abs().mean())
    assert err_default < err_cut


@pytest.mark.parametrize("case", ["kitti", "lattice"])
def test_limits_same_without_pykdtree(monkeypatch, case):
    """The limits' distance search (pykdtree's k-d tree where importable) against the fallback
    through geodepth.ops.knn: the same spacing, gap and column spans, on the KITTI sparse map and
    on a tie-heavy duplicated lattice."""
    pytest.importorskip("pykdtree")
    import sys

    if case == "kitti":
        import geodepth

        d = geodepth.load_frame(geodepth.sample_dir()).sparse_depth[0]
        rc = torch.nonzero(d > 0)
        uv, (H, W) = (torch.stack([rc[:, 1], rc[:, 0]], 1) + 0.5).double(), d.shape
    else:
        H, W = 23, 37
        uv = torch.from_numpy(np.ascontiguousarray(_lattice_points(H, W, 3, 2)[:, :2]))

    def limits():
        t, b, w = knn_mod.column_span(uv, H, W)
        return knn_mod._nn_spacing(uv), t, b, w, knn_mod.scan_gap(uv, t, b, H, W)

    fast = limits()
    monkeypatch.setitem(sys.modules, "pykdtree.kdtree", None)  # import fails: the fallback
    slow = limits()
    assert fast[0] == pytest.approx(slow[0], rel=1e-12) and fast[4] == pytest.approx(slow[4], rel=1e-12)
    assert torch.equal(fast[1], slow[1]) and torch.equal(fast[2], slow[2]) and fast[3] == slow[3]
    assert fast[4] > 0
