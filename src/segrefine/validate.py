"""Every input check of the library, in one place: they raise InputError, never assert.

Each ``as_*`` function returns the value in the form the caller computes with
(a float, a tuple, an array of a known dtype) or raises :class:`InputError`
with one line that names the argument in backticks and shows what was received,
e.g. ``` `tau` must be a number in (0, 1], got 2.0 ```. Arrays are checked for
dimensions, shape (against the array named ``ref``), size, dtype and finite
values in that order, so the first problem is the one reported.
"""

from __future__ import annotations

import math
import warnings
from numbers import Integral, Real

import numpy as np

from segrefine.errors import InputError

_AXES = {2: "2D (H, W)", 3: "3D (I, J, K)"}


# --------------------------------------------------------------------------- scalars


def _bounds(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high:g}"
    return ""


def as_number(value, name: str, *, low=None, high=None, low_open: bool = False,
              high_open: bool = False, integer: bool = False, allow_none: bool = False):
    """``value`` as a finite float (``integer``: an int) within the bounds given.

    ``low_open`` / ``high_open`` exclude the bound itself; ``allow_none`` lets
    ``None`` through unchanged. Booleans are refused (``True`` is not a count).
    """
    if value is None and allow_none:
        return None
    kind = "an integer" if integer else "a number"
    ok = (isinstance(value, Integral if integer else Real) and not isinstance(value, bool)
          and math.isfinite(float(value)))
    if ok:
        ok = ((low is None or (value > low if low_open else value >= low))
              and (high is None or (value < high if high_open else value <= high)))
    if not ok:
        extra = " or None" if allow_none else ""
        raise InputError(f"`{name}` must be {kind}{_bounds(low, high, low_open, high_open)}{extra}, "
                         f"got {value!r}")
    return int(value) if integer else float(value)


def as_choice(value, name: str, choices, *, allow_none: bool = False):
    """``value`` if it is one of ``choices`` (or ``None`` with ``allow_none``)."""
    if (value is None and allow_none) or (isinstance(value, str) and value in choices):
        return value
    extra = " or None" if allow_none else ""
    raise InputError(f"`{name}` must be one of {', '.join(map(str, choices))}{extra}, got {value!r}")


def as_axis(axis, name: str = "axis", ndim: int = 3) -> int:
    """A slice axis of an ``ndim``-D volume: an integer in ``[0, ndim)``."""
    if isinstance(axis, bool) or not isinstance(axis, Integral) or not 0 <= axis < ndim:
        allowed = ", ".join(map(str, range(ndim - 1))) + f" or {ndim - 1}"
        raise InputError(f"`{name}` must be {allowed}, got {axis!r}")
    return int(axis)


def as_spacing(spacing, ndim: int, name: str = "spacing") -> tuple[float, ...]:
    """``spacing`` as ``ndim`` positive finite floats (``None`` gives all ones)."""
    if spacing is None:
        return (1.0,) * ndim
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        values = ()
    if len(values) != ndim or not all(math.isfinite(v) and v > 0 for v in values):
        raise InputError(f"`{name}` must be {ndim} positive numbers (voxel size along each axis) "
                         f"or None, got {spacing!r}")
    return values


def renamed(old_value, old: str, new: str, new_value):
    """A keyword renamed (one name per meaning): the old one still works, with a warning.

    Returns ``old_value`` when it was given (warning :class:`DeprecationWarning`),
    else ``new_value``.
    """
    if old_value is None:
        return new_value
    warnings.warn(f"`{old}` is renamed `{new}`; the old name will be removed",
                  DeprecationWarning, stacklevel=3)
    return old_value


# --------------------------------------------------------------------------- arrays


def as_array(value, name: str, *, ndim, shape=None, ref: str = "image", min_size: int = 1,
             finite: bool = True, dtype=None) -> np.ndarray:
    """``value`` as a real array of ``ndim`` dimensions (an int or a tuple of allowed ones).

    ``shape``: the shape it must have (that of the array named ``ref``);
    ``min_size``: the smallest size along every axis; ``finite``: refuse NaN/inf;
    ``dtype``: return a copy of that dtype (else the array as given).
    """
    arr = np.asarray(value)
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if arr.ndim not in allowed:
        kinds = " or ".join(_AXES.get(n, f"{n}D") for n in allowed)
        raise InputError(f"`{name}` must be a {kinds} array, got shape {arr.shape}")
    if shape is not None and arr.shape != tuple(shape):
        raise InputError(f"`{name}` (shape {arr.shape}) must have the same shape as `{ref}` "
                         f"(shape {tuple(shape)})")
    if arr.size == 0 or min(arr.shape) < min_size:
        need = "must not be empty" if min_size <= 1 else \
            f"must be at least {'x'.join([str(min_size)] * arr.ndim)}"
        raise InputError(f"`{name}` {need}, got shape {arr.shape}")
    if arr.dtype != bool and (not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr)):
        raise InputError(f"`{name}` must hold real numbers, got dtype {arr.dtype}")
    if finite and arr.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise InputError(f"`{name}` must be finite, got {bad} NaN/inf values")
    return arr.astype(dtype) if dtype is not None else arr


def as_slice(value, name: str, *, shape=None, ref: str = "image", min_size: int = 1) -> np.ndarray:
    """A finite float64 ``(H, W)`` copy of ``value`` (see :func:`as_array`)."""
    return as_array(value, name, ndim=2, shape=shape, ref=ref, min_size=min_size, dtype=np.float64)


def as_volume(value, name: str, *, shape=None, ref: str = "image", min_size: int = 1,
              dtype=None) -> np.ndarray:
    """A finite real ``(I, J, K)`` array (see :func:`as_array`)."""
    return as_array(value, name, ndim=3, shape=shape, ref=ref, min_size=min_size, dtype=dtype)


def in_unit_interval(arr: np.ndarray, name: str) -> np.ndarray:
    """``arr`` if its values lie in [0, 1] (a probability)."""
    if arr.size:
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(f"`{name}` must be a probability in [0, 1], got values in "
                             f"[{lo:.4g}, {hi:.4g}]")
    return arr


def as_probability(value, name: str = "prob", *, ndim=2, shape=None, ref: str = "image",
                   min_size: int = 1, dtype=np.float64) -> np.ndarray:
    """A finite array of ``ndim`` dimensions with values in [0, 1], as ``dtype`` (a copy)."""
    arr = as_array(value, name, ndim=ndim, shape=shape, ref=ref, min_size=min_size, dtype=dtype)
    return in_unit_interval(arr, name)


def as_nonnegative(value, name: str, *, ndim=3, shape=None, ref: str = "image",
                   dtype=np.float64) -> np.ndarray:
    """A finite array with no negative value (an uncertainty map), as ``dtype``."""
    arr = as_array(value, name, ndim=ndim, shape=shape, ref=ref, dtype=dtype)
    if arr.size and float(arr.min()) < 0:
        raise InputError(f"`{name}` must be non-negative, got a minimum of {float(arr.min()):.4g}")
    return arr


def binary_mask(mask, name: str) -> np.ndarray:
    """``mask`` as a boolean copy; it must hold only 0/1 (or bools)."""
    m = np.asarray(mask)
    if m.dtype != bool:
        if not np.issubdtype(m.dtype, np.number) or np.iscomplexobj(m):
            raise InputError(f"`{name}` must be a binary mask, got dtype {m.dtype}")
        values = np.unique(m)
        extra = values[~np.isin(values, (0, 1))]
        if extra.size:
            shown = ", ".join(f"{v:g}" for v in extra[:5].tolist())
            raise InputError(f"`{name}` must be a binary mask holding 0 and 1, got {shown}")
    return m.astype(bool)


def as_mask(value, name: str, *, ndim=None, shape=None, ref: str = "image") -> np.ndarray:
    """A boolean copy of a 0/1 mask, of ``ndim`` dimensions and ``shape`` if given."""
    m = np.asarray(value)
    if ndim is not None and m.ndim not in ((ndim,) if isinstance(ndim, int) else tuple(ndim)):
        raise InputError(f"`{name}` must be a {_AXES.get(ndim, f'{ndim}D')} mask, got shape {m.shape}")
    if shape is not None and m.shape != tuple(shape):
        raise InputError(f"`{name}` (shape {m.shape}) must have the same shape as `{ref}` "
                         f"(shape {tuple(shape)})")
    return binary_mask(m, name)


def as_scribbles(value, shape, name: str = "scribbles", ref: str = "image") -> np.ndarray:
    """Scribble labels as a ``uint8`` copy of ``shape`` holding only 0 (none), 1 (foreground)
    and 2 (background)."""
    s = np.asarray(value)
    if s.shape != tuple(shape):
        raise InputError(f"`{name}` (shape {s.shape}) must have the same shape as `{ref}` "
                         f"(shape {tuple(shape)})")
    if s.dtype != bool and (not np.issubdtype(s.dtype, np.number) or np.iscomplexobj(s)):
        raise InputError(f"`{name}` must hold integer labels 0/1/2, got dtype {s.dtype}")
    if s.dtype == np.uint8 and (s.size == 0 or int(s.max()) <= 2):
        return s.copy()  # the common case, without np.unique's sort
    values = np.unique(s)
    extra = values[~np.isin(values, (0, 1, 2))]
    if extra.size:
        shown = ", ".join(f"{v:g}" for v in extra[:5].tolist())
        raise InputError(f"`{name}` must hold only 0 (none), 1 (foreground) and 2 (background), "
                         f"got {shown}")
    return s.astype(np.uint8)


def image_map(arr, name: str, shape: tuple, *, unit_interval: bool = False) -> np.ndarray:
    """A per-voxel map read from a file (probability, uncertainty) as float32: it must have
    the image's ``shape`` and finite values, and with ``unit_interval`` lie in [0, 1].
    ``name`` is how the error names it (a file, not an argument, hence no backticks)."""
    a = np.asarray(arr, np.float32)
    if a.shape != tuple(shape):
        raise InputError(f"{name} shape {a.shape} differs from the image's {tuple(shape)}")
    if not np.isfinite(a).all():
        raise InputError(f"{name} holds NaN or inf values")
    if unit_interval and a.size and (a.min() < 0 or a.max() > 1):
        raise InputError(f"{name} values must lie in [0, 1], got [{a.min():.3g}, {a.max():.3g}]")
    return a
