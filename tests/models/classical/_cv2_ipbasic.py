"""OpenCV restatement of IP-Basic's two functions (kujason/ip_basic, depth_map_utils.py), for
the tests only: the same steps with cv2 calls, written for the comparison, on a copy."""
from __future__ import annotations

import numpy as np

_F = {n: np.ones((n, n), np.uint8) for n in (5, 7, 9, 31)}
_D5 = np.array([[0, 0, 1, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0], [0, 0, 1, 0, 0]], np.uint8)


def _cross(n):
    k = np.zeros((n, n), np.uint8)
    k[n // 2] = 1
    k[:, n // 2] = 1
    return k


def _top(valid):
    return np.argmax(valid, axis=0)


def cv2_fill_in_fast(cv2, depth, max_depth=100.0, custom_kernel=_D5, extrapolate=False, blur_type="bilateral"):
    d = np.array(depth, np.float32, copy=True)
    v = d > 0.1
    d[v] = max_depth - d[v]
    d = cv2.dilate(d, custom_kernel)
    d = cv2.morphologyEx(d, cv2.MORPH_CLOSE, _F[5])
    e = d < 0.1
    d[e] = cv2.dilate(d, _F[7])[e]
    if extrapolate:
        top = _top(d > 0.1)
        vals = d[top, np.arange(d.shape[1])]
        rows = np.arange(d.shape[0])[:, None]
        d = np.where(rows < top[None], vals[None], d).astype(np.float32)
        e = d < 0.1
        d[e] = cv2.dilate(d, _F[31])[e]
    d = cv2.medianBlur(d, 5)
    if blur_type == "bilateral":
        d = cv2.bilateralFilter(d, 5, 1.5, 2.0)
    else:
        v = d > 0.1
        d[v] = cv2.GaussianBlur(d, (5, 5), 0)[v]
    v = d > 0.1
    d[v] = max_depth - d[v]
    return d


def cv2_fill_in_multiscale(cv2, depth, max_depth=100.0, dilation_kernel_far=_cross(3), dilation_kernel_med=_cross(5),
                           dilation_kernel_near=_cross(7), extrapolate=False, blur_type="bilateral"):
    d0 = np.float32(depth)
    near = (d0 > 0.1) & (d0 <= 15.0)
    med = (d0 > 15.0) & (d0 <= 30.0)
    far = d0 > 30.0
    s1 = d0.copy()
    v = s1 > 0.1
    s1[v] = max_depth - s1[v]
    df = cv2.dilate(np.multiply(s1, far), dilation_kernel_far)
    dm = cv2.dilate(np.multiply(s1, med), dilation_kernel_med)
    dn = cv2.dilate(np.multiply(s1, near), dilation_kernel_near)
    s2 = s1.copy()
    for dl in (df, dm, dn):
        s2[dl > 0.1] = dl[dl > 0.1]
    s3 = cv2.morphologyEx(s2, cv2.MORPH_CLOSE, _F[5])
    s4 = s3.copy()
    v = s3 > 0.1
    s4[v] = cv2.medianBlur(s3, 5)[v]
    rows = np.arange(d0.shape[0])[:, None]
    top_mask = rows >= _top(s4 > 0.1)[None]
    e = ~(s4 > 0.1) & top_mask
    s5 = s4.copy()
    s5[e] = cv2.dilate(s4, _F[9])[e]
    top = _top(s5 > 0.1)
    s6 = s5.copy()
    if extrapolate:
        vals = s5[top, np.arange(s5.shape[1])]
        s6 = np.where(rows < top[None], vals[None], s5).astype(np.float32)
        top_mask = np.ones_like(top_mask)
    else:
        top_mask = rows >= top[None]
    s7 = s6.copy()
    for _ in range(6):
        e = (s7 < 0.1) & top_mask
        s7[e] = cv2.dilate(s7, _F[5])[e]
    b = cv2.medianBlur(s7, 5)
    v = (s7 > 0.1) & top_mask
    s7[v] = b[v]
    if blur_type == "gaussian":
        b = cv2.GaussianBlur(s7, (5, 5), 0)
        v = (s7 > 0.1) & top_mask
        s7[v] = b[v]
    else:
        b = cv2.bilateralFilter(s7, 5, 0.5, 2.0)
        s7[v] = b[v]
    s8 = s7.copy()
    v = s8 > 0.1
    s8[v] = max_depth - s8[v]
    return s8
