"""The two-layer GCN: sparse propagation and the fused hidden layer (numba)."""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

from segrefine.validate import as_number

# --------------------------------------------------------------------------- GCN


class _SymmetricPropagate(torch.autograd.Function):
    """``y = Â x`` for a symmetric sparse ``Â``; the gradient is ``Â g`` (``Âᵀ = Â``)."""

    @staticmethod
    def forward(ctx, x, operator):
        ctx.operator = operator
        return _multiply(operator, x)

    @staticmethod
    def backward(ctx, grad):
        return _multiply(ctx.operator, grad), None


def _multiply(operator, x: torch.Tensor) -> torch.Tensor:
    if isinstance(operator, torch.Tensor):
        if x.shape[1] == 1:
            return torch.mv(operator, x[:, 0].contiguous()).unsqueeze(1)
        return operator @ x.contiguous()
    x = x.detach().numpy()
    if x.shape[1] == 1:  # scipy's matrix-vector kernel is faster than its matrix-matrix one
        return torch.from_numpy(np.ascontiguousarray(operator @ x[:, 0])).unsqueeze(1)
    return torch.from_numpy(np.ascontiguousarray(operator @ x))


def propagate(adjacency, x: torch.Tensor) -> torch.Tensor:
    """``Â x`` for a symmetric ``Â`` (torch sparse tensor or scipy sparse matrix), differentiable in ``x``.

    ``x`` is ``(N, F)`` float32.
    """
    return _SymmetricPropagate.apply(x, adjacency)


@numba.njit(cache=True, fastmath=True, nogil=True, inline="always")
def _pre_activation(ax, i, w1, b1, a):  # pragma: no cover - numba
    # a = ax[i] @ w1 + b1, the hidden layer of row i before the ReLU (shared by both passes)
    for j in range(w1.shape[1]):
        a[j] = b1[j]
    for q in range(ax.shape[1]):
        x = ax[i, q]
        for j in range(w1.shape[1]):
            a[j] += x * w1[q, j]


@numba.njit(cache=True, fastmath=True, nogil=True)
def _hidden_forward(ax, w1, b1, w2, mask, scale, out):  # pragma: no cover - numba
    # out_i = scale Σ_j mask_ij ReLU(Σ_q ax_iq w1_qj + b1_j) w2_j
    n = ax.shape[0]
    h = w1.shape[1]
    a = np.empty(h, np.float32)
    zero = np.float32(0.0)
    for i in range(n):
        _pre_activation(ax, i, w1, b1, a)
        acc = zero
        for j in range(h):
            acc += max(a[j], zero) * np.float32(mask[i, j]) * w2[j]
        out[i] = acc * scale


@numba.njit(cache=True, fastmath=True, nogil=True)
def _hidden_backward(ax, w1, b1, w2, mask, scale, gu, dw1, db1, dw2):  # pragma: no cover - numba
    # the activations are recomputed row by row; float32 sums over blocks of
    # rows (vectorised) are added to float64 totals
    n, f = ax.shape
    h = w1.shape[1]
    a = np.empty(h, np.float32)
    ga = np.empty(h, np.float32)
    pw1 = np.zeros((f, h), np.float32)
    pb1 = np.zeros(h, np.float32)
    pw2 = np.zeros(h, np.float32)
    zero = np.float32(0.0)
    dw1[:] = 0.0
    db1[:] = 0.0
    dw2[:] = 0.0
    block = 1024
    for start in range(0, n, block):
        for i in range(start, min(n, start + block)):
            g = gu[i] * scale
            _pre_activation(ax, i, w1, b1, a)
            for j in range(h):
                m = g * np.float32(mask[i, j])
                pw2[j] += max(a[j], zero) * m
                ga[j] = m * w2[j] if a[j] > zero else zero
            for j in range(h):
                pb1[j] += ga[j]
            for q in range(f):
                x = ax[i, q]
                for j in range(h):
                    pw1[q, j] += x * ga[j]
        for j in range(h):
            dw2[j] += pw2[j]
            db1[j] += pb1[j]
            pw2[j] = zero
            pb1[j] = zero
            for q in range(f):
                dw1[q, j] += pw1[q, j]
                pw1[q, j] = zero


class _HiddenLayer(torch.autograd.Function):
    """``u = dropout(ReLU(Y W1 + b1)) W2`` row by row (``Y = Â X``), without an ``(N, hidden)`` array.

    Gradients flow to ``W1``, ``b1`` and ``W2`` (not to ``Y``, a constant of training).
    """

    @staticmethod
    def forward(ctx, ax, w1, b1, w2, mask, scale):
        ctx.save_for_backward(ax, w1, b1, w2)
        ctx.mask, ctx.scale = mask, scale
        out = np.empty(ax.shape[0], dtype=np.float32)
        _hidden_forward(*_kernel_args(ax, w1, b1, w2, mask), np.float32(scale), out)
        return torch.from_numpy(out).unsqueeze(1)

    @staticmethod
    def backward(ctx, grad):
        ax, w1, b1, w2 = ctx.saved_tensors
        dw1 = np.empty(tuple(w1.shape), dtype=np.float64)
        db1 = np.empty(w1.shape[1], dtype=np.float64)
        dw2 = np.empty(w1.shape[1], dtype=np.float64)
        gu = np.ascontiguousarray(grad.detach().numpy()[:, 0], dtype=np.float32)
        _hidden_backward(*_kernel_args(ax, w1, b1, w2, ctx.mask), np.float32(ctx.scale), gu, dw1, db1, dw2)
        grads = [torch.from_numpy(g.astype(np.float32)).reshape(p.shape)
                 for g, p in ((dw1, w1), (db1, b1), (dw2, w2))]
        return None, *grads, None, None


def _kernel_args(ax, w1, b1, w2, mask):
    f32 = [np.ascontiguousarray(t.detach().numpy(), dtype=np.float32) for t in (ax, w1, b1, w2)]
    if mask is None:  # no dropout: a mask of ones keeps one branch-free kernel
        mask = np.ones((ax.shape[0], w1.shape[1]), dtype=np.uint8)
    return f32[0], f32[1], f32[2], f32[3].ravel(), mask


class GCN(torch.nn.Module):
    """Two-layer graph convolutional network with one output (a foreground logit).

    Parameters
    ----------
    in_features : int
        Node features (3: intensity, ``E``, ``H``).
    hidden : int
        Hidden units (the paper: 32).
    dropout : float
        Dropout rate between the layers, in [0, 1) (the paper: 0.5).
    seed : int or None
        Seeds the Glorot-uniform initial weights and the dropout masks (a
        ``numpy`` generator of the module's own: torch's global generator is
        neither used nor changed).

    Notes
    -----
    Kipf & Welling's propagation rule with a single output::

        Z = Â · dropout(ReLU(Â X W1 + b1)) · W2 + b2,     P = σ(Z)

    ``Â X W1`` is evaluated as ``(Â X) W1``: ``X`` has 3 columns against 32
    hidden units, so the sparse matrix multiplies the narrowest dense matrix,
    and ``Â X`` is computed once per graph (pass it as ``ax``). The second
    layer is ``Â (H W2)``, a sparse product with one column. The hidden layer
    ``u = dropout(ReLU(Y W1 + b1)) W2`` is one fused numba kernel, forward and
    backward, that never stores the ``(N, 32)`` activations: in plain torch
    the element-wise passes over those arrays (dropout's random draws above
    all) cost far more than the sparse products. Dropout masks hold one
    random bit per unit at rate 0.5 (a Bernoulli draw otherwise), scaled by
    ``1/(1 - p)``.
    """

    def __init__(self, in_features: int = 3, hidden: int = 32, *, dropout: float = 0.5,
                 seed: int | None = 0):
        super().__init__()
        in_features = as_number(in_features, "in_features", low=1, integer=True)
        hidden = as_number(hidden, "hidden", low=1, integer=True)
        self.dropout = as_number(dropout, "dropout", low=0.0, high=1.0, high_open=True)
        self._rng = np.random.default_rng(as_number(seed, "seed", low=0, integer=True, allow_none=True))

        def glorot(fan_in, fan_out):
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            w = self._rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(np.float32)
            return torch.nn.Parameter(torch.from_numpy(w))

        self.w1 = glorot(in_features, hidden)
        self.b1 = torch.nn.Parameter(torch.zeros(hidden))
        self.w2 = glorot(hidden, 1)
        self.b2 = torch.nn.Parameter(torch.zeros(1))

    def _dropout_mask(self, n: int) -> np.ndarray:
        h = self.w1.shape[1]
        if self.dropout == 0.5:
            bits = np.frombuffer(self._rng.bytes((n * h + 7) // 8), dtype=np.uint8)
            return np.unpackbits(bits, count=n * h).reshape(n, h)
        return (self._rng.random((n, h), dtype=np.float32) >= self.dropout).view(np.uint8)

    def forward(self, x: torch.Tensor, adjacency, *, ax: torch.Tensor | None = None) -> torch.Tensor:
        """Foreground logits ``(N,)`` of nodes with features ``x`` ``(N, F)`` float32.

        ``adjacency`` is ``Â`` as a torch sparse tensor or a scipy sparse matrix
        (symmetric); ``ax`` is ``Â x`` if already computed.
        """
        if ax is None:
            ax = propagate(adjacency, x)
        mask, scale = None, 1.0
        if self.training and self.dropout > 0:
            mask, scale = self._dropout_mask(ax.shape[0]), 1.0 / (1.0 - self.dropout)
        u = _HiddenLayer.apply(ax, self.w1, self.b1, self.w2, mask, scale)
        return (propagate(adjacency, u) + self.b2)[:, 0]
