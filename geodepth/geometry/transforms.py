"""Rigid transforms as 4x4 homogeneous matrices ``T_dst_from_src`` (``p_dst = T @ p_src``)."""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_rigid", "compose_transforms", "invert_transform", "is_rigid", "make_transform"]

#: default tolerance of :func:`check_rigid` on ``|R^T R - I|`` and ``|det R - 1|``; KITTI prints
#: its rotations with 7 significant digits, which leaves errors of about 1e-6.
RIGID_ATOL = 1e-4


def _as_T(T, name: str = "T") -> Tensor:
    if not isinstance(T, Tensor):
        T = torch.as_tensor(T, dtype=torch.float64)
    if T.shape[-2:] != (4, 4) or T.dim() not in (2, 3):
        raise ValueError(f"{name} must be (4, 4) or (B, 4, 4), got {tuple(T.shape)}")
    if not torch.is_floating_point(T):
        T = T.to(torch.float64)
    if not bool(torch.isfinite(T).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return T


def make_transform(R, t) -> Tensor:
    """Build ``T = [[R, t], [0, 1]]``.

    Args:
        R: (3, 3) or (B, 3, 3) rotation.
        t: (3,) or (B, 3) translation in metres.

    Returns:
        (4, 4) or (B, 4, 4) transform, dtype of ``R`` (float64 for non-tensor input).

    Example:
        >>> make_transform(torch.eye(3), torch.tensor([1., 2., 3.]))[:3, 3].tolist()
        [1.0, 2.0, 3.0]
    """
    R = R if isinstance(R, Tensor) else torch.as_tensor(R, dtype=torch.float64)
    t = t if isinstance(t, Tensor) else torch.as_tensor(t, dtype=R.dtype)
    if R.shape[-2:] != (3, 3) or R.dim() not in (2, 3):
        raise ValueError(f"R must be (3, 3) or (B, 3, 3), got {tuple(R.shape)}")
    if tuple(t.shape) != tuple(R.shape[:-1]):
        raise ValueError(f"t must be {tuple(R.shape[:-1])} to match R, got {tuple(t.shape)}")
    T = torch.zeros(R.shape[:-2] + (4, 4), dtype=R.dtype, device=R.device)
    T[..., :3, :3] = R
    T[..., :3, 3] = t.to(R.dtype)
    T[..., 3, 3] = 1
    return T


def invert_transform(T) -> Tensor:
    """Inverse of a rigid transform, ``[[R^T, -R^T t], [0, 1]]`` (exact for rigid ``T``).

    Args:
        T: (4, 4) or (B, 4, 4) rigid transform.

    Returns:
        The inverse, same shape and dtype.

    Example:
        >>> T = make_transform(torch.tensor([[0., -1, 0], [1, 0, 0], [0, 0, 1]]), torch.tensor([1., 0, 0]))
        >>> (invert_transform(T) @ T).tolist() == torch.eye(4).tolist()
        True
    """
    T = _as_T(T)
    R, t = T[..., :3, :3], T[..., :3, 3]
    Rt = R.transpose(-1, -2)
    return make_transform(Rt, -(Rt @ t[..., None])[..., 0])


def compose_transforms(*Ts) -> Tensor:
    """``compose_transforms(A, B, C) = A @ B @ C`` (apply ``C`` first), for (4, 4) or (B, 4, 4).

    Example:
        >>> A = make_transform(torch.eye(3), torch.tensor([1., 0, 0]))
        >>> compose_transforms(A, A)[:3, 3].tolist()
        [2.0, 0.0, 0.0]
    """
    if not Ts:
        raise ValueError("compose_transforms needs at least one transform")
    out = _as_T(Ts[0], "Ts[0]")
    for i, T in enumerate(Ts[1:], 1):
        out = out @ _as_T(T, f"Ts[{i}]").to(out.dtype)
    return out


def _rigidity_error(T: Tensor) -> tuple[float, float, float]:
    T = T.to(torch.float64)
    R = T[..., :3, :3]
    I = torch.eye(3, dtype=R.dtype, device=R.device)
    orth = float((R.transpose(-1, -2) @ R - I).abs().max())
    det = float((torch.linalg.det(R) - 1).abs().max())
    last = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=T.dtype, device=T.device)
    row = float((T[..., 3, :] - last).abs().max())
    return orth, det, row


def is_rigid(T, atol: float = RIGID_ATOL) -> bool:
    """True if ``T`` is a rigid transform within ``atol`` (see :func:`check_rigid`).

    Example:
        >>> is_rigid(torch.eye(4)), is_rigid(2 * torch.eye(4))
        (True, False)
    """
    orth, det, row = _rigidity_error(_as_T(T))
    return orth <= atol and det <= atol and row <= atol


def check_rigid(T, name: str = "T", atol: float = RIGID_ATOL) -> Tensor:
    """Return ``T`` (as a tensor) or raise ``ValueError`` if it is not a rigid transform.

    Rigid: ``|R^T R - I| <= atol``, ``|det R - 1| <= atol`` (no reflection) and a last row
    ``[0, 0, 0, 1]`` (elementwise within ``atol``).

    Args:
        T: (4, 4) or (B, 4, 4) transform.
        name: the name used in the error message.
        atol: tolerance (default 1e-4: well above KITTI's print rounding, far below any
            scale or shear error).
    """
    T = _as_T(T, name)
    orth, det, row = _rigidity_error(T)
    if orth > atol or det > atol or row > atol:
        raise ValueError(
            f"{name} is not a rigid transform: max|R^T R - I| = {orth:.3g}, |det R - 1| = {det:.3g}, "
            f"last row off [0, 0, 0, 1] by {row:.3g} (tolerance {atol:g})"
        )
    return T
