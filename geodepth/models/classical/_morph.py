"""Pure-torch image operators with OpenCV semantics, used by the classical fills.

Private module. Every function takes a float32 image ``(H, W)`` on any device and returns a
new ``(H, W)`` tensor on the same device; nothing is modified in place. The order-statistic
operators (dilate, erode, close, median) also take int16 images (ranks of float values).

* :func:`dilate` / :func:`erode` / :func:`morph_close`: OpenCV ``dilate`` / ``erode`` /
  ``morphologyEx(MORPH_CLOSE)`` with the default border (pixels outside the image are ignored),
  anchor at the kernel centre. Kernels that are a union of centred rectangles (full, cross,
  diamond) run as separable running maxima; any other binary kernel runs as a max over shifts.
* :func:`median_blur5`: ``cv2.medianBlur(x, 5)`` (exact 13th of 25, replicated border).
* :func:`gaussian_blur5`: ``cv2.GaussianBlur(x, (5, 5), 0)`` (binomial [1, 4, 6, 4, 1] / 16,
  reflect-101 border), bit-exact with OpenCV on float32.
* :func:`bilateral_filter`: ``cv2.bilateralFilter(x, d, sigma_color, sigma_space)`` for
  float32 (circular window of radius d // 2, reflect-101 border).
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

__all__ = ["bilateral_filter", "compiled_enabled", "dilate", "erode", "gaussian_blur5", "median_blur5", "morph_close",
           "set_compiled"]

_NEG_INF = float("-inf")


# ------------------------------------------------------------------------ optional compilation
_COMPILE = {"on": False}
_COMPILED: dict = {}


def set_compiled(enabled: bool) -> bool:
    """Switch the CPU median, Gaussian and bilateral steps to ``torch.compile``d versions
    (inductor C++; needs a C++ compiler). Results are bit-identical to the eager ones. The
    first call per image size compiles (seconds). Returns the previous setting."""
    prev = _COMPILE["on"]
    _COMPILE["on"] = bool(enabled)
    return prev


def compiled_enabled() -> bool:
    """Whether :func:`set_compiled` switched compilation on."""
    return _COMPILE["on"]


def _compiled(name: str, fn):
    """The compiled ``fn`` when compilation is on (built once per name), else None."""
    if not _COMPILE["on"]:
        return None
    c = _COMPILED.get(name)
    if c is None:
        c = _COMPILED[name] = torch.compile(fn, dynamic=False)
    return c


# ----------------------------------------------------------------------------------- kernels
@functools.lru_cache(maxsize=64)
def _decompose(kernel_bytes: bytes, kh: int, kw: int):
    """Split a binary kernel into centred rectangles ``(h, w)``; ``None`` if it is not a union
    of centred rectangles (then the caller uses shifts). Result is minimal up to containment."""
    import itertools

    k = [[kernel_bytes[r * kw + c] != 0 for c in range(kw)] for r in range(kh)]
    if kh % 2 == 0 or kw % 2 == 0:
        return None
    cy, cx = kh // 2, kw // 2
    rects = set()
    for r, c in itertools.product(range(kh), range(kw)):
        if not k[r][c]:
            continue
        dy, dx = abs(r - cy), abs(c - cx)
        # the centred rectangle spanned by this offset must lie inside the kernel
        for rr in range(cy - dy, cy + dy + 1):
            for cc in range(cx - dx, cx + dx + 1):
                if not k[rr][cc]:
                    return None
        rects.add((2 * dy + 1, 2 * dx + 1))
    maximal = [a for a in rects if not any(b != a and b[0] >= a[0] and b[1] >= a[1] for b in rects)]
    return tuple(sorted(maximal))


_MAX_KERNEL = 63


def _kernel_key(kernel) -> tuple[bytes, int, int]:
    if isinstance(kernel, torch.Tensor):
        k = kernel.detach().to("cpu")
    else:
        k = torch.as_tensor(kernel)
    if k.ndim != 2 or k.numel() == 0:
        raise ValueError(f"kernel must be a non-empty 2-D array, got shape {tuple(k.shape)}")
    if max(k.shape) > _MAX_KERNEL:  # the decomposition into rectangles grows fast (201 x 201: ~7 s)
        raise ValueError(f"kernel must be at most {_MAX_KERNEL} x {_MAX_KERNEL} (IP-Basic's are up to 31 x 31), "
                         f"got {tuple(k.shape)}")
    kb = (k != 0).to(torch.uint8).contiguous()
    return bytes(kb.flatten().tolist()), int(kb.shape[0]), int(kb.shape[1])


# ---------------------------------------------------------------------------- running maxima
def _lowest(dtype: torch.dtype):
    """Padding value that never wins a maximum: -inf, or the integer minimum (integer images
    hold ranks >= 0, so negating them for an erosion cannot overflow)."""
    return _NEG_INF if dtype.is_floating_point else torch.iinfo(dtype).min


def _run_max(x: torch.Tensor, w: int, dim: int) -> torch.Tensor:
    """Centred running maximum of odd width ``w`` along ``dim`` (-1 or -2); outside ignored."""
    if w == 1:
        return x
    if x.is_cuda:
        return _run_max_pool(x, w, dim)
    r = w // 2
    pad = (r, r, 0, 0) if dim == -1 else (0, 0, r, r)
    m = F.pad(x, pad, value=_lowest(x.dtype))
    s = 1  # m[i] = max(p[i : i + s])
    while 2 * s <= w:
        n = m.shape[dim]
        m = torch.maximum(m.narrow(dim, 0, n - s), m.narrow(dim, s, n - s))
        s *= 2
    if s < w:
        n = m.shape[dim]
        d = w - s
        m = torch.maximum(m.narrow(dim, 0, n - d), m.narrow(dim, d, n - d))
    return m


def _run_max_pool(x: torch.Tensor, w: int, dim: int) -> torch.Tensor:
    """GPU variant of :func:`_run_max` (one ``max_pool2d`` launch; its padding is -inf)."""
    r = w // 2
    k = (1, w) if dim == -1 else (w, 1)
    p = (0, r) if dim == -1 else (r, 0)
    return F.max_pool2d(x[None, None], k, stride=1, padding=p)[0, 0]


def dilate(x: torch.Tensor, kernel) -> torch.Tensor:
    """Grey dilation of ``x`` (H, W) float by a binary ``kernel`` (kh, kw), as ``cv2.dilate``."""
    key = _kernel_key(kernel)
    rects = _decompose(*key)
    if rects is None:
        return _dilate_shifts(x, key)
    if not rects:  # all-zero kernel: identity, as the shifts path (cv2 5.0 returns -FLT_MAX/shifted values)
        return x.clone()
    out = None
    rows = {}
    for h, w in rects:
        if w not in rows:
            rows[w] = _run_max(x, w, -1)
        y = _run_max(rows[w], h, -2)
        out = y if out is None else torch.maximum(out, y)
    return out


def _dilate_shifts(x: torch.Tensor, key) -> torch.Tensor:
    kb, kh, kw = key
    ay, ax = kh // 2, kw // 2
    H, W = x.shape
    p = F.pad(x, (ax, kw - 1 - ax, ay, kh - 1 - ay), value=_lowest(x.dtype))
    out = None
    for r in range(kh):
        for c in range(kw):
            if kb[r * kw + c]:
                y = p[r:r + H, c:c + W]
                out = y.clone() if out is None else torch.maximum(out, y)
    if out is None:  # empty kernel: OpenCV treats it as a 1x1 kernel
        return x.clone()
    return out


def erode(x: torch.Tensor, kernel) -> torch.Tensor:
    """Grey erosion of ``x`` (H, W) by a binary ``kernel``, as ``cv2.erode``."""
    return -dilate(-x, kernel)


def morph_close(x: torch.Tensor, kernel) -> torch.Tensor:
    """``cv2.morphologyEx(x, cv2.MORPH_CLOSE, kernel)``: dilation, then erosion."""
    return erode(dilate(x, kernel), kernel)


# ---------------------------------------------------------------------------------- median 5x5
def _batcher_pairs(n: int, with_stage: bool = False) -> list[tuple[int, ...]]:
    """Comparators ``(i, j)`` of Batcher's odd-even merge sort on ``n`` wires (n a power of
    two); ``(p, i, j)`` with ``with_stage``, where stage ``p`` merges sorted blocks of ``p``."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((p, i + j, i + j + k) if with_stage else (i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


@functools.lru_cache(maxsize=32)
def _selection_plan(n: int, want: tuple[int, ...]):
    """Pruned sorting network on ``n`` wires that yields sorted positions ``want``.

    Returns a list of ``(i, j, need_min, need_max)``; wires ``>= n`` are +inf pads and the
    comparators touching them are dropped (min(a, inf) = a)."""
    size = 1
    while size < n:
        size *= 2
    pairs = [(i, j) for i, j in _batcher_pairs(size) if j < n]  # i < j; a pad at j is a no-op
    needed = set(want)
    plan = []
    for i, j in reversed(pairs):
        nmin, nmax = i in needed, j in needed
        if not (nmin or nmax):
            continue
        plan.append((i, j, nmin, nmax))
        needed.add(i)
        needed.add(j)
    plan.reverse()
    return plan


def _select(wires: list[torch.Tensor], want: tuple[int, ...], plan=None) -> list[torch.Tensor]:
    """Elementwise order statistics: for each position in ``want``, the plane holding the
    ``want[k]``-th smallest (0-based) of ``wires``, computed with a pruned sorting network
    (``plan``: ``_selection_plan(len(wires), want)``, looked up when not given)."""
    w = list(wires)
    if plan is None:
        plan = _selection_plan(len(w), tuple(want))
    for i, j, nmin, nmax in plan:
        a, b = w[i], w[j]
        if nmin:
            w[i] = torch.minimum(a, b)
        if nmax:
            w[j] = torch.maximum(a, b)
    return [w[k] for k in want]


# candidate cells of a 5x5 matrix sorted along rows and columns that can hold its median
_MED_CANDIDATES = {0: (3, 4), 1: (2, 3, 4), 2: (1, 2, 3), 3: (0, 1, 2), 4: (0, 1)}
# the networks of the median, built once (plain lists, so torch.compile traces them as constants)
_MED_COL_PLAN = list(_selection_plan(5, (0, 1, 2, 3, 4)))
_MED_LEVEL_PLANS = {level: list(_selection_plan(5, keep)) for level, keep in _MED_CANDIDATES.items()}


def _median13_plan():
    """Network for the 7th smallest of the 13 candidates, using that they come in sorted runs
    (row levels 1, 2, 3 keep three sorted cells, levels 0 and 4 two each).

    The candidates sit on 16 Batcher wires in blocks of four: levels 1, 2, 3 each padded with
    +inf (already sorted blocks), then levels 0 and 4 (two sorted pairs). Batcher's stages 1
    and 2 only sort within blocks of four, so they are no-ops except the stage-2 merge of the
    last block. +inf pads are resolved statically (a comparator with +inf is a no-op or a
    swap), then the network is pruned backwards to what position 6 needs.
    Returns ``(slots, ops)``: candidate index per wire (-1 = +inf) and ops ``(kind, i, j,
    need_min, need_max)`` with kind ``'swap'`` (relabel) or ``'cmp'``."""
    slots = [2, 3, 4, -1, 5, 6, 7, -1, 8, 9, 10, -1, 0, 1, 11, 12]
    inf = {w for w, c in enumerate(slots) if c < 0}
    ops = []
    for stage, i, j in _batcher_pairs(16, with_stage=True):
        if stage == 1 or (stage == 2 and i < 12) or j in inf:
            continue
        if i in inf:  # min(inf, b) = b goes to i, inf to j
            inf.discard(i)
            inf.add(j)
            ops.append(("swap", i, j))
        else:
            ops.append(("cmp", i, j))
    needed = {6}
    plan = []
    for kind, i, j in reversed(ops):
        if kind == "swap":
            ni, nj = i in needed, j in needed
            needed.discard(i)
            needed.discard(j)
            if ni:
                needed.add(j)
            if nj:
                needed.add(i)
            plan.append((kind, i, j, True, True))
            continue
        nmin, nmax = i in needed, j in needed
        if nmin or nmax:
            plan.append((kind, i, j, nmin, nmax))
            needed.update((i, j))
    plan.reverse()
    return slots, plan


_MED_SLOTS, _MED_FINAL_PLAN = _median13_plan()


def _median_of_candidates(cand: list[torch.Tensor]) -> torch.Tensor:
    w = [cand[c] if c >= 0 else None for c in _MED_SLOTS]
    for kind, i, j, nmin, nmax in _MED_FINAL_PLAN:
        if kind == "swap":
            w[i], w[j] = w[j], w[i]
            continue
        a, b = w[i], w[j]
        if nmin:
            w[i] = torch.minimum(a, b)
        if nmax:
            w[j] = torch.maximum(a, b)
    return w[6]


# rows per strip of the CPU median and Gaussian: each strip's intermediate planes then stay in
# the L2 cache instead of streaming whole-image planes through memory (2x faster on KITTI)
_MEDIAN_STRIP_ROWS = 32
_STRIP_ROWS = 64
_COMPILED_MEDIAN_STRIP_ROWS = 16


def median_blur5(x: torch.Tensor) -> torch.Tensor:
    """``cv2.medianBlur(x, 5)`` on float32 ``x`` (H, W): the exact median of each 5x5 window,
    border replicated."""
    if x.is_cuda:
        return _median5_unfold(x)
    H, W = x.shape
    p = F.pad(x[None, None], (2, 2, 2, 2), mode="replicate")[0, 0]
    fn, rows = _median5_padded, _MEDIAN_STRIP_ROWS
    compiled = _compiled("median", _median5_padded)
    if compiled is not None and x.dtype in (torch.float32, torch.int16):
        # inductor vectorises float32 min/max, not int16: ranks (< 2**15) convert exactly.
        # Strips of 16 rows keep the compiled graph's buffers small: whole-image buffers
        # (~35 MB) went back to the OS after every call and cost ~4000 page faults per frame
        fn, rows = compiled, _COMPILED_MEDIAN_STRIP_ROWS
        if x.dtype == torch.int16:
            return _strips(fn, p.float(), rows, torch.empty((H, W))).to(x.dtype)
    if H <= rows:
        return fn(p)
    return _strips(fn, p, rows, torch.empty_like(x))


def _strips(fn, p: torch.Tensor, rows: int, out: torch.Tensor) -> torch.Tensor:
    """``out[s:e] = fn(p[s:e + 4])`` for strips of ``rows`` rows of the padded image ``p``."""
    for s in range(0, out.shape[0], rows):
        e = min(s + rows, out.shape[0])
        out[s:e] = fn(p[s:e + 4])
    return out


def _median5_padded(p: torch.Tensor) -> torch.Tensor:
    """Median of every 5x5 window of the padded image ``p`` (h + 4, w + 4) -> (h, w)."""
    H, W = p.shape[0] - 4, p.shape[1] - 4
    # sort each vertical 5-run once (shared by the 5 windows that use it), then sort the levels
    # across the 5 columns only as far as needed, then take the 7th of 13 candidates
    cols = _select([p[r:r + H] for r in range(5)], (0, 1, 2, 3, 4), _MED_COL_PLAN)
    cand = []
    for level, keep in _MED_CANDIDATES.items():
        c = cols[level]
        cand += _select([c[:, d:d + W] for d in range(5)], keep, _MED_LEVEL_PLANS[level])
    return _median_of_candidates(cand)


def _median5_unfold(x: torch.Tensor) -> torch.Tensor:
    """GPU variant of :func:`median_blur5`: unfold the 25 taps and take their median."""
    H, W = x.shape
    p = F.pad(x[None, None], (2, 2, 2, 2), mode="replicate")[0, 0]
    u = p.unfold(0, 5, 1).unfold(1, 5, 1).reshape(H, W, 25)
    return u.median(dim=-1).values  # 25 values: torch's median is the 13th smallest


# -------------------------------------------------------------------------------- gaussian 5x5
def _reflect101(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    n = x.shape[dim]
    if n > r:
        pad = (r, r, 0, 0) if dim == -1 else (0, 0, r, r)
        return F.pad(x[None, None], pad, mode="reflect")[0, 0]
    # tiny images: index arithmetic of BORDER_REFLECT_101
    idx = torch.arange(-r, n + r, device=x.device)
    if n == 1:
        idx = torch.zeros_like(idx)
    else:
        period = 2 * (n - 1)
        idx = idx.remainder(period)
        idx = torch.where(idx >= n, period - idx, idx)
    return x.index_select(dim if dim >= 0 else x.ndim + dim, idx)


def gaussian_blur5(x: torch.Tensor) -> torch.Tensor:
    """``cv2.GaussianBlur(x, (5, 5), 0)`` on float32 ``x`` (H, W): separable [1, 4, 6, 4, 1] / 16,
    rows first, reflect-101 border, same float32 summation order as OpenCV."""
    if x.device.type != "cpu":
        return _gaussian_blur5(x)
    compiled = _compiled("gaussian", _gaussian_blur5)
    if compiled is not None:
        return compiled(x)
    # CPU eager: pad once, then filter strips of rows that stay in the L2 cache (same values)
    H, W = x.shape
    p = _reflect101(_reflect101(x, 2, -1), 2, -2)
    out = torch.empty_like(x)
    for s in range(0, H, _STRIP_ROWS):
        e = min(s + _STRIP_ROWS, H)
        horiz = _binomial5([p[s:e + 4, i:i + W] for i in range(5)])
        out[s:e] = _binomial5([horiz[i:i + e - s] for i in range(5)])
    return out


def _binomial5(s: list[torch.Tensor]) -> torch.Tensor:
    """[1, 4, 6, 4, 1] / 16 of five shifted planes, in OpenCV's float32 summation order."""
    return s[2] * 0.375 + (s[1] + s[3]) * 0.25 + (s[0] + s[4]) * 0.0625


def _gaussian_blur5(x: torch.Tensor) -> torch.Tensor:
    def one(y, dim):
        p = _reflect101(y, 2, dim)
        n = y.shape[dim]
        return _binomial5([p.narrow(dim, i, n) for i in range(5)])

    return one(one(x, -1), -2)


# ----------------------------------------------------------------------------------- bilateral
def bilateral_filter(x: torch.Tensor, d: int, sigma_color: float, sigma_space: float) -> torch.Tensor:
    """``cv2.bilateralFilter(x, d, sigma_color, sigma_space)`` on float32 ``x`` (H, W).

    Window: the offsets ``(i, j)`` with ``i**2 + j**2 <= r**2``, ``r = d // 2`` (13 taps for
    d = 5), reflect-101 border. Weight of a tap: ``exp(-(x_q - x_p)**2 / (2 sigma_color**2))
    * exp(-(i**2 + j**2) / (2 sigma_space**2))``; output ``sum(w x_q) / sum(w)``. OpenCV (with
    Intel IPP, as in the pip wheels) computes the same formula with its own float32 rounding,
    so results agree to about one float32 ulp, not bit for bit (computed here in float64).
    If the image is constant (max - min < FLT_EPSILON) it is returned unchanged, as in OpenCV.
    """
    sigma_color = 1.0 if sigma_color <= 0 else float(sigma_color)
    sigma_space = 1.0 if sigma_space <= 0 else float(sigma_space)
    r = d // 2 if d > 0 else int(round(sigma_space * 1.5))
    r = max(r, 1)
    if float(x.max() - x.min()) < 1.1920929e-07:
        return x.clone()
    compiled = _compiled("bilateral", _bilateral) if x.device.type == "cpu" else None
    return (compiled or _bilateral)(x, r, sigma_color, sigma_space)


def _bilateral(x: torch.Tensor, r: int, sigma_color: float, sigma_space: float) -> torch.Tensor:
    H, W = x.shape
    # float64 inside: the closest we get to OpenCV/IPP's result (which rounds differently in
    # float32); the output is rounded to the input dtype once, at the end
    x64 = x.to(torch.float64)
    p = _reflect101(_reflect101(x64, r, -1), r, -2)
    cc = -0.5 / (sigma_color * sigma_color)
    cs = -0.5 / (sigma_space * sigma_space)
    num = x64.clone()  # the centre tap, weight 1
    den = torch.ones_like(x64)
    for i in range(-r, r + 1):
        for j in range(-r, r + 1):
            rr = i * i + j * j
            if rr > r * r or rr == 0:
                continue
            q = p[r + i:r + i + H, r + j:r + j + W]
            diff = q - x64
            w = torch.exp(diff * diff * cc) * math.exp(rr * cs)
            num += w * q
            den += w
    return (num / den).to(x.dtype)
