"""Converters to torch-geometric: edge_index direction checked through real PyG layers."""
from __future__ import annotations

import pytest
import torch

from geodepth.ops.graph import batch_to_offsets, edge_index_to_knn, knn_to_edge_index, offsets_to_batch
from geodepth.ops.knn import knn
from geodepth.ops.radius import radius

pyg = pytest.importorskip("torch_geometric")


def _cloud(n=60, seed=0):
    return torch.rand(n, 3, generator=torch.Generator().manual_seed(seed))


def test_knn_to_edge_index_by_hand():
    idx = torch.tensor([[0, 2, -1], [1, 0, 2]])
    assert knn_to_edge_index(idx).tolist() == [[0, 2, 1, 0, 2], [0, 0, 1, 1, 1]]
    assert knn_to_edge_index(idx, self_loops=False).tolist() == [[2, 0, 2], [0, 1, 1]]


def test_edgeconv_aggregates_over_our_neighbours():
    """PyG EdgeConv (flow source_to_target) on our edge_index equals the definition
    x'_i = max_{j in N(i)} h([x_i, x_j - x_i]) computed directly from idx."""
    from torch_geometric.nn import EdgeConv

    torch.manual_seed(0)
    x = _cloud()
    idx = knn(x, x, 6).idx
    h = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    got = EdgeConv(h, aggr="max")(x, knn_to_edge_index(idx))
    xi = x[:, None, :].expand(-1, 6, -1)
    want = h(torch.cat([xi, x[idx] - xi], -1)).max(1).values
    torch.testing.assert_close(got, want)


def test_pointnetconv_matches_independent_graph():
    """PointNetConv on our graph equals PointNetConv on a graph built by hand from torch.cdist."""
    from torch_geometric.nn import PointNetConv

    torch.manual_seed(1)
    pos = _cloud(50, 1)
    x = torch.rand(50, 5)
    k = 7
    order = torch.cdist(pos.double(), pos.double()).argsort(1)[:, :k]  # distinct distances: no ties
    ref_ei = torch.stack([order.flatten(), torch.arange(50).repeat_interleave(k)])
    conv = PointNetConv(torch.nn.Linear(5 + 3, 16), torch.nn.Linear(16, 4), add_self_loops=False)
    ours = conv(x, pos, knn_to_edge_index(knn(pos, pos, k).idx))
    torch.testing.assert_close(ours, conv(x, pos, ref_ei))
    assert torch.equal(knn_to_edge_index(knn(pos, pos, k).idx), ref_ei)


def test_edge_index_round_trip_and_pyg_order():
    x = _cloud(40, 2)
    idx = knn(x, x, 5).idx
    idx[3, 2:] = -1
    ei = knn_to_edge_index(idx)
    assert torch.equal(edge_index_to_knn(ei, 40, 5), idx)
    # an edge_index shuffled by PyG's sort utility (by target) still converts back (sets per row)
    from torch_geometric.utils import sort_edge_index

    ei2 = sort_edge_index(ei.flip(1), sort_by_row=False)
    back = edge_index_to_knn(ei2, 40, 5)
    assert torch.equal(back.sort(1).values, idx.sort(1).values)


def test_edge_index_to_knn_errors():
    with pytest.raises(ValueError, match="more than k=1"):
        edge_index_to_knn(torch.tensor([[0, 1], [0, 0]]), 2, 1)
    with pytest.raises(ValueError, match=r"edge_index must be \(2, E\)"):
        edge_index_to_knn(torch.zeros(3, 2, dtype=torch.int64), 2, 1)
    with pytest.raises(ValueError, match="targets must be in"):
        edge_index_to_knn(torch.tensor([[0], [5]]), 2, 1)
    # these were copied through (a -7 source), truncated (floats) or crashed inside torch
    with pytest.raises(ValueError, match="sources must be >= 0"):
        edge_index_to_knn(torch.tensor([[5, -7, 1], [0, 0, 1]]), 2, 2)
    with pytest.raises(ValueError, match="integer node indices"):
        edge_index_to_knn(torch.tensor([[0.5], [0.0]]), 2, 1)
    for kw in (dict(num_nodes=-1), dict(num_nodes=2.5), dict(k=2.5), dict(k=0)):
        args = dict(num_nodes=2, k=2) | kw
        with pytest.raises(ValueError, match=rf"^{next(iter(kw))} must be an int >= "):  # "k" alone matched anything
            edge_index_to_knn(torch.tensor([[0], [0]]), args["num_nodes"], args["k"])
    assert edge_index_to_knn(torch.tensor([[7], [1]]), 2, 1).tolist() == [[-1], [7]]  # bipartite: any source


def test_offsets_batch_match_pyg_batch():
    """Our offsets are PyG's Batch.ptr and our batch vector is PyG's Batch.batch."""
    from torch_geometric.data import Batch, Data

    sizes = [3, 0, 5, 2]
    b = Batch.from_data_list([Data(pos=torch.rand(s, 3), num_nodes=s) for s in sizes])
    assert torch.equal(offsets_to_batch(b.ptr), b.batch)
    assert torch.equal(batch_to_offsets(b.batch, num_batches=len(sizes)), b.ptr)
    assert batch_to_offsets(b.batch).tolist() == b.ptr.tolist()  # trailing batch non-empty here


def test_offsets_batch_no_batches():
    """batch_to_offsets of an empty batch vector gives [0] (no batches); offsets_to_batch took it
    back as an error ('must be a 1-D tensor (B+1,) with B >= 1'), now as the empty vector."""
    empty = torch.zeros(0, dtype=torch.int64)
    off = batch_to_offsets(empty)
    assert off.tolist() == [0]
    for o in (off, off.int()):
        out = offsets_to_batch(o)
        assert out.dtype == torch.int64 and out.tolist() == []
    with pytest.raises(ValueError, match="starting at 0"):
        offsets_to_batch(torch.tensor([3]))


def test_offsets_batch_errors():
    with pytest.raises(ValueError, match="sorted"):
        batch_to_offsets(torch.tensor([0, 2, 1]))
    with pytest.raises(ValueError, match="non-decreasing"):
        offsets_to_batch(torch.tensor([0, 3, 2]))
    with pytest.raises(ValueError, match="integer batch numbers"):
        batch_to_offsets(torch.tensor([0.0, 0.5, 1.7]))
    for nb in (-1, 2.5):
        with pytest.raises(ValueError, match="num_batches must be an int"):
            batch_to_offsets(torch.tensor([0, 0]), nb)


def test_graphs_equal_torch_cluster():
    """With torch-cluster installed (an optional peer, not a dependency): our self-KNN graph through
    ``knn_to_edge_index(self_loops=False)`` is ``torch_cluster.knn_graph(loop=False)``'s graph, and
    a bipartite ragged ``knn`` lists what ``torch_cluster.knn`` does, per target in distance order
    (continuous random clouds: no ties)."""
    tc = pytest.importorskip("torch_cluster")
    x = torch.rand(300, 3, generator=torch.Generator().manual_seed(5))
    off = torch.tensor([0, 120, 120, 300])
    batch = offsets_to_batch(off)
    ours = knn_to_edge_index(knn(x, x, 7, query_offsets=off, points_offsets=off).idx, self_loops=False)
    theirs = tc.knn_graph(x, 6, batch=batch, loop=False)  # row 0 neighbours, row 1 centres
    assert torch.equal(edge_index_to_knn(ours, 300, 6), edge_index_to_knn(theirs, 300, 6))
    q = torch.rand(90, 3, generator=torch.Generator().manual_seed(6))
    qoff = torch.tensor([0, 40, 40, 90])
    nn_ = knn(q, x, 5, query_offsets=qoff, points_offsets=off)
    row, col = tc.knn(x, q, 5, batch_x=batch, batch_y=offsets_to_batch(qoff))  # row: query, col: point
    assert torch.equal(edge_index_to_knn(torch.stack([col, row]), 90, 5), nn_.idx)


def test_edge_index_to_knn_refuses_tables_beyond_2_31_entries():
    """k=10**12 (or as many nodes) went to torch.full and failed in the allocator."""
    ei = torch.tensor([[0], [0]])
    for num_nodes, k in ((2, 10 ** 12), (10 ** 12, 1), (2 ** 16, 2 ** 15 + 1)):
        match = rf"num_nodes \* k must be at most 2147483648 .*num_nodes={num_nodes}, k={k}"
        with pytest.raises(ValueError, match=match):
            edge_index_to_knn(ei, num_nodes, k)
    assert edge_index_to_knn(ei, 2, 1000).shape == (2, 1000)  # wide tables are fine (aggregate takes any k)


def test_offsets_to_batch_takes_int32_offsets():
    off = torch.tensor([0, 2, 2, 5])
    assert torch.equal(offsets_to_batch(off.int()), offsets_to_batch(off))
    assert offsets_to_batch(off.int()).dtype == torch.int64
    with pytest.raises(ValueError, match="offsets must be int64 or int32, got torch.int16"):
        offsets_to_batch(off.short())


def test_knn_to_edge_index_refuses_indices_below_minus_one():
    """-1 is the only padding value (as aggregate's check says): a -2 or -7 from a corrupted or
    hand-built idx was dropped silently like padding, so the graph lost the edge without a word."""
    with pytest.raises(ValueError, match=r"idx values must be >= -1 \(-1 = no neighbour\), got -2"):
        knn_to_edge_index(torch.tensor([[0, -2], [1, -1]]))
    # the padding value itself still drops out, as in the twin's definition: one edge per idx >= 0
    idx = torch.tensor([[1, -1], [-1, -1], [0, 1]])
    assert knn_to_edge_index(idx).tolist() == [[1, 0, 1], [0, 2, 2]]


def test_kitti_graphs_vs_torch_cluster(kitti_dir):
    """The mapping the README states, on real KITTI points (a ragged batch of three slices of the
    scan): ``knn_to_edge_index(knn(x, x, k).idx)`` is ``knn_graph(x, k, batch, loop=True)`` edge for
    edge, in the same order; ``radius`` gives ``radius_graph``'s neighbour sets wherever
    ``max_num_neighbors`` does not bind (where it binds we keep the nearest, torch-cluster whichever
    its search meets first), and counts a point at exactly ``r`` (``<=``), which torch-cluster does
    not (``<``)."""
    tc = pytest.importorskip("torch_cluster")
    import numpy as np

    scan = np.fromfile(kitti_dir / "velodyne.bin", np.float32).reshape(-1, 4)
    x = torch.from_numpy(scan[::30, :3].copy())  # ~4k points spread over the whole scan
    off = torch.tensor([0, 1000, 1000, 2500, x.shape[0]])
    batch = offsets_to_batch(off)
    ours = knn_to_edge_index(knn(x, x, 12, query_offsets=off, points_offsets=off).idx)
    assert torch.equal(ours, tc.knn_graph(x, 12, batch=batch, loop=True))
    cap = 24
    got = radius(x, x, 1.5, max_neighbors=cap, query_offsets=off, points_offsets=off).idx
    theirs = edge_index_to_knn(tc.radius_graph(x, 1.5, batch=batch, loop=True, max_num_neighbors=cap), x.shape[0], cap)
    free = (got >= 0).sum(1) < cap
    assert 0.5 < free.float().mean() < 1  # both kinds of rows occur
    assert torch.equal(got[free].sort(1).values, theirs[free].sort(1).values)
    assert torch.equal((theirs[~free] >= 0).sum(1), (got[~free] >= 0).sum(1))  # full rows on both sides
    # the boundary: points 1.0 apart with r = 1.0 (exact in float32)
    line = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [3.0, 0, 0]])
    assert knn_to_edge_index(radius(line, line, 1.0).idx, self_loops=False).tolist() == [[1, 0], [0, 1]]
    assert tc.radius_graph(line, 1.0, loop=False).numel() == 0
