"""Rigid transforms as 4x4 homogeneous matrices ``T_dst_from_src`` (``p_dst = T @ p_src``)."""
from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_number

__all__ = ["check_rigid", "compose_transforms", "invert_transform", "is_rigid", "make_transform"]

#: default tolerance of :func:`check_rigid` on ``|R^T R - I|`` and ``|det R - 1|``; KITTI prints
#: its rotations with 7 significant digits, which leaves errors of about 1e-6.
RIGID_ATOL = 1e-4


def _as_tensor(x, name: str, shape: str, dtype=torch.float64) -> Tensor:
    """``x`` as a tensor (arrays and nested sequences of numbers are converted), else ValueError."""
    if isinstance(x, Tensor):
        return x
    try:
        return torch.as_tensor(x, dtype=dtype)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a {shape} tensor (or array of numbers), "
                         f"got {type(x).__name__} {x!r:.80}") from None


def _check_finite(x: Tensor, name: str) -> None:
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")


def _as_T(T, name: str = "T") -> Tensor:
    T = _as_tensor(T, name, "(4, 4) or (B, 4, 4)")
    if T.shape[-2:] != (4, 4) or T.dim() not in (2, 3):
        raise ValueError(f"{name} must be (4, 4) or (B, 4, 4), got {tuple(T.shape)}")
    if not torch.is_floating_point(T):
        T = T.to(torch.float64)
    _check_finite(T, name)
    return T


def make_transform(R, t) -> Tensor:
    """Build ``T = [[R, t], [0, 1]]``.

    Args:
        R: (3, 3) or (B, 3, 3) rotation.
        t: (3,) or (B, 3) translation in metres.

    Returns:
        (4, 4) or (B, 4, 4) transform, dtype of ``R`` (float64 for non-tensor or integer input).

    Raises:
        ValueError: wrong shapes, non-numeric input, NaN or inf in ``R`` or ``t``.

    Example:
        >>> make_transform(torch.eye(3), torch.tensor([1., 2., 3.]))[:3, 3].tolist()
        [1.0, 2.0, 3.0]
    """
    R = _as_tensor(R, "R", "(3, 3) or (B, 3, 3)")
    if not torch.is_floating_point(R):  # an integer R would truncate t
        R = R.to(torch.float64)
    t = _as_tensor(t, "t", "(3,) or (B, 3)", dtype=R.dtype)
    if R.shape[-2:] != (3, 3) or R.dim() not in (2, 3):
        raise ValueError(f"R must be (3, 3) or (B, 3, 3), got {tuple(R.shape)}")
    if tuple(t.shape) != tuple(R.shape[:-1]):
        raise ValueError(f"t must be {tuple(R.shape[:-1])} to match R, got {tuple(t.shape)}")
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"t must be real (metres), got {t.dtype}")
    _check_finite(R, "R")
    _check_finite(t, "t")
    T = torch.zeros(R.shape[:-2] + (4, 4), dtype=R.dtype, device=R.device)
    T[..., :3, :3] = R
    T[..., :3, 3] = t.to(R.dtype)
    T[..., 3, 3] = 1
    return T


def invert_transform(T, *, atol: float = RIGID_ATOL) -> Tensor:
    """Inverse of a rigid transform, ``[[R^T, -R^T t], [0, 1]]`` (exact for rigid ``T``).

    Args:
        T: (4, 4) or (B, 4, 4) rigid transform.
        atol: rigidity tolerance, as for :func:`check_rigid`.

    Returns:
        The inverse, same shape and dtype.

    Raises:
        ValueError: ``T`` is not rigid within ``atol`` (a scale, shear, reflection or a last
        row other than ``[0, 0, 0, 1]``: the formula above would not invert it), or holds
        NaN / inf. Use ``torch.linalg.inv`` for general 4x4 matrices.

    Example:
        >>> T = make_transform(torch.tensor([[0., -1, 0], [1, 0, 0], [0, 0, 1]]), torch.tensor([1., 0, 0]))
        >>> (invert_transform(T) @ T).tolist() == torch.eye(4).tolist()
        True
    """
    T = check_rigid(T, atol=atol)
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
    Ts = [_as_T(T, f"Ts[{i}]") for i, T in enumerate(Ts)]
    batch = [(i, T.shape[0]) for i, T in enumerate(Ts) if T.dim() == 3 and T.shape[0] != 1]
    if len({b for _, b in batch}) > 1:
        (i, _), (j, _) = batch[0], next(x for x in batch if x[1] != batch[0][1])
        raise ValueError(f"compose_transforms: batch sizes differ, Ts[{i}] is {tuple(Ts[i].shape)} "
                         f"but Ts[{j}] is {tuple(Ts[j].shape)}")
    out = Ts[0]
    for T in Ts[1:]:
        out = out @ T.to(out.dtype)
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
    atol = check_number("atol", atol, ge=0)
    orth, det, row = _rigidity_error(_as_T(T))
    return orth <= atol and det <= atol and row <= atol


def check_rigid(T, name: str = "T", atol: float = RIGID_ATOL) -> Tensor:
    """Return ``T`` (as a tensor) or raise ``ValueError`` if it is not a rigid transform.

    Rigid: ``|R^T R - I| <= atol``, ``|det R - 1| <= atol`` (no reflection) and a last row
    ``[0, 0, 0, 1]`` (elementwise within ``atol``).

    Args:
        T: (4, 4) or (B, 4, 4) transform.
        name: the name used in the error message.
        atol: tolerance, a finite number >= 0 (default 1e-4: well above KITTI's print
            rounding, far below any scale or shear error).
    """
    atol = check_number("atol", atol, ge=0)
    T = _as_T(T, name)
    orth, det, row = _rigidity_error(T)
    if orth > atol or det > atol or row > atol:
        raise ValueError(
            f"{name} is not a rigid transform: max|R^T R - I| = {orth:.3g}, |det R - 1| = {det:.3g}, "
            f"last row off [0, 0, 0, 1] by {row:.3g} (tolerance {atol:g})"
        )
    return T
