"""Benchmark: ``geodepth.nn.BilateralConv`` on the real KITTI scan against a naive materialising twin.

Groups (ratio = anchor time / our time, > 1 is faster), each at C -> C channels, k = 16 self-KNN,
H = 4 heads, 16 guidance channels (random, standing in for image features pulled onto the points)
embedded to 8:
- ``bilateral <C>-><C> <set>``: forward without gradients.
- ``... fwd+bwd``: forward and backward (gradients of the features and every parameter).

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` (the harness); on the CPU the harness's
RSS growth and, printed and kept in each case's note, the peak of live tensor bytes over one call
(torch profiler, as ``mem_contconv.py``), which does not depend on what the allocator kept.

Anchor: the same layer written the plain torch way: gather the neighbours' features into
(N, k, C), softmax the (N, k, H) logits, einsum. Ours gathers inside the fused
``scored_aggregate`` and never holds (N, k, C).

CPU: the front half of the scan (x > |y|, 30,681 points). CUDA: the front half and the full scan.

Run: ``python benchmarks/bm_bilateral.py --device cpu|cuda`` (JSON under benchmarks/results/).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bm_aggregate import K, load_scan  # noqa: E402
from harness import KITTI_FRAME, Case, run_cases  # noqa: E402
from mem_contconv import peak_live_bytes  # noqa: E402

from geodepth.nn import BilateralConv  # noqa: E402
from geodepth.ops import knn  # noqa: E402

HEADS, GUIDANCE, EMBED = 4, 16, 8


def naive_bilateral(conv: BilateralConv, x, p, guid, idx):
    """The layer's formula in plain torch, holding the gathered (N, k, C_in) features."""
    g = guid @ conv.guidance_weight.t()
    valid = idx >= 0
    j = idx.clamp(min=0)
    rel, gd = p[j] - p[:, None], g[j] - g[:, None]
    lg = -(rel.square().sum(-1, keepdim=True) / (2 * conv.log_sigma_s.exp() ** 2)
           + gd.square().sum(-1, keepdim=True) / (2 * conv.log_sigma_r.exp() ** 2))
    lg = lg + conv.attention(torch.cat([rel, gd], -1))
    w = torch.softmax(lg.masked_fill(~valid[..., None], float("-inf")), 1).nan_to_num(0.0)  # (N, k, H)
    z = torch.einsum("nkh,nkc->nhc", w, x[j])  # x[j]: (N, k, C_in)
    wh = conv.weight.view(x.shape[1], conv.heads, -1).transpose(0, 1)
    out = torch.einsum("nhc,hcd->nhd", z, wh).reshape(len(x), -1)
    return out + x @ conv.self_weight + conv.bias


def cases_for(pts: np.ndarray, c: int, device: str, tag: str, repeats: int) -> list[Case]:
    torch.manual_seed(0)
    p = torch.from_numpy(pts[:, :3].copy()).to(device)
    idx = knn(p, p, K).idx  # exact self-KNN (each point first), on the device
    x = torch.randn(p.shape[0], c, device=device)
    guid = torch.randn(p.shape[0], GUIDANCE, device=device)
    conv = BilateralConv(c, c, GUIDANCE, heads=HEADS, guidance_dim=EMBED).to(device)
    with torch.no_grad():  # a trained-looking attention (reset_parameters starts it at 0)
        conv.att_weight2.normal_()
    note = f"N={p.shape[0]}, k={K}, H={HEADS}, guidance {GUIDANCE}->{EMBED}"
    with torch.no_grad():
        err = (conv(x, p, guid, idx) - naive_bilateral(conv, x, p, guid, idx)).abs().max().item()
    print(f"[{tag} C={c}] max |ours - naive| = {err:.2e}", file=sys.stderr)

    def fwd(fn):
        def run():
            with torch.no_grad():
                return fn(conv, x, p, guid, idx)
        return run

    def train(fn):
        def run():
            xr = x.detach().requires_grad_()
            out = fn(conv, xr, p, guid, idx)
            out.square().mean().backward()
            conv.zero_grad(set_to_none=True)
            return out
        return run

    def ours(m, a, q, g, i):
        return m(a, q, g, i)

    group = f"bilateral {c}->{c} {tag}"
    runs = [(group, "naive torch (gathers (N,k,C))", fwd(naive_bilateral), True),
            (group, "geodepth BilateralConv (fused)", fwd(ours), False),
            (group + " fwd+bwd", "naive torch (gathers (N,k,C))", train(naive_bilateral), True),
            (group + " fwd+bwd", "geodepth BilateralConv (fused)", train(ours), False)]
    cases = []
    for grp, name, fn, anchor in runs:
        extra = ""
        if device == "cpu":  # RSS growth misses what the allocator reuses: count live tensor bytes too
            peak, _ = peak_live_bytes(fn)
            extra = f"; peak live tensors {peak / 2**20:.1f} MB"
            print(f"[{grp}] {name}: peak live tensors {peak / 2**20:.1f} MB", file=sys.stderr)
        cases.append(Case(grp, name, fn, device, anchor=anchor, repeats=repeats, note=note + extra))
    return cases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--scan", type=Path, default=KITTI_FRAME / "velodyne.bin")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--channels", default="32,64", help="comma-separated C (C -> C)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    scan = load_scan(args.scan)
    front = scan[scan[:, 0] > np.abs(scan[:, 1])]
    chans = [int(c) for c in args.channels.split(",")]
    cases: list[Case] = []
    for c in chans:
        if args.device == "cpu":
            cases += cases_for(front, c, "cpu", "front half", args.repeats or 5)
        else:
            cases += cases_for(front, c, "cuda", "front half", args.repeats or 20)
            cases += cases_for(scan, c, "cuda", "full scan", args.repeats or 20)
    run_cases("bm_bilateral", cases, out=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
