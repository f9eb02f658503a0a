"""Uncertainty-based GCN refinement of a binary segmentation (Soberanis-Mukul et al., 2020).

The network's own uncertainty splits the voxels around its prediction into
confident and uncertain ones; a small graph convolutional network is trained,
for this one volume, on the confident voxels and relabels the uncertain ones.

1. :func:`mc_statistics`: expectation ``E = (1/T) Σ_t p_t`` and entropy
   ``H = H_b(E)`` (bits) from ``T`` Monte Carlo dropout passes.
2. :func:`build_graph`: a partially labelled graph on a box (ROI) around the
   prediction; voxels with ``H > τ`` are unlabelled.
3. :class:`GCN`, :func:`train_gcn`: a two-layer GCN (Kipf & Welling) trained with
   binary cross-entropy on the labelled nodes.
4. :func:`refine_gcn`: the uncertain voxels take the GCN's label; every other
   voxel keeps the prediction.

Two schemes (:data:`SCHEMES`): ``graph="ours"`` (the default) and
``graph="authors"``, the weights, features, training subset and relabelling of
the authors' public code (rodsom22/gcn_refinement), re-implemented; see
:func:`build_graph` and docs/benchmarks.md for the comparison and the
differences that remain.

Arrays are volumes ``(I, J, K)`` in voxel order; ``spacing`` is one number per
axis in mm in the same order (``None`` = 1 mm). Entropies are in bits, in
[0, 1], so ``τ`` is in (0, 1].

:func:`build_graph_reference` builds the same graph with per-node Python loops,
as the authors' public code does; it exists only as a test oracle and a speed
baseline for the vectorised :func:`build_graph`.

Speed (2 CPU cores shared with other jobs, load ~5; a 42x42x42 ROI: 74,088
nodes, 809,534 edges, k = 16): graph 0.2-0.6 s (loops: 10 s), 200 epochs
2.3 s, :func:`refine_gcn` 3.0 s in all.

References
----------
R. D. Soberanis-Mukul, N. Navab, S. Albarqouni. Uncertainty-based graph
convolutional networks for organ segmentation refinement. MIDL 2020.
T. N. Kipf, M. Welling. Semi-supervised classification with graph
convolutional networks. ICLR 2017.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field, replace
from numbers import Integral, Real

import cc3d
import numba
import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from scipy import ndimage

from segrefine.errors import InputError
from segrefine.uncertainty import binary_entropy

#: Voxels added on each side (per axis) of the bounding box of the prediction's
#: largest component. Chosen on the hippocampus `val` split (`segrefine bench gcn`,
#: docs/tuning.md): margins 0, 1, 3, 6, 10 gave GCN Dice 87.79, 87.76, 87.70,
#: 87.64, 87.65 % (full-data U-Net) and 85.62, 85.61, 85.54, 85.51, 85.49 %
#: (low-data U-Net; seeded MC passes): a wider box only adds confident
#: background nodes.
DEFAULT_MARGIN = 0
#: Box that dilates the uncertain region for the ``reduced`` and ``band`` node sets.
REDUCED_DILATION = (5, 7, 7)
#: Node sets: ``roi`` every ROI voxel; ``reduced`` the authors' set (the uncertain
#: region dilated by :data:`REDUCED_DILATION`, united with ``E > 0.5``); ``band``
#: the dilated uncertain region alone (confident voxels near the uncertain ones).
NODE_SETS = ("roi", "reduced", "band")
#: Most nodes in one graph. A graph costs about 1 kB per node at its build peak
#: (docs/benchmarks.md), so 2 M nodes stay near 2 GB; larger node sets switch to
#: the ``band`` set and, if still larger, are cut into slabs of at most this many
#: nodes, one GCN per slab.
DEFAULT_MAX_NODES = 2_000_000
#: Probabilities are clipped to [ε, 1 - ε] before the KL divergence (finite logits).
PROB_EPS = 1e-6
#: Graph and training schemes: ``ours`` (product of three similarities in (0, 1], features
#: ``[(V - μ)/s, E, H]``, every confident node trained on, only uncertain nodes relabelled) and
#: ``authors`` (as in the authors' public code, rodsom22/gcn_refinement: a sum of three terms
#: with the diversity counted positively, their feature normalisation, a random 80 % of the
#: confident nodes trained on with 0.5·BCE, every node relabelled). See :func:`build_graph`.
SCHEMES = ("ours", "authors")
#: ``authors``: the guard ``δ`` inside their logarithms, ``log2(a / (b + δ) + δ)``.
AUTHORS_DELTA = 1e-15
#: ``authors``: share of the confident nodes trained on (the rest was their unused validation set).
AUTHORS_TRAIN_FRACTION = 0.8
#: ``authors``: their loss is a focal loss with α = 0.5, γ = 0, i.e. 0.5 · binary cross-entropy.
AUTHORS_LOSS_WEIGHT = 0.5
#: Which nodes take the GCN's label: the uncertain ones, or every node of the graph.
RELABEL = ("uncertain", "all")


# --------------------------------------------------------------------------- validation


def _volume(name: str, value, *, shape: tuple | None = None, ref: str = "image") -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 3:
        raise InputError(f"{name} must be a 3D (I, J, K) array, got shape {arr.shape}")
    if shape is not None and arr.shape != tuple(shape):
        raise InputError(f"{name} (shape {arr.shape}) must have the same shape as {ref} (shape {tuple(shape)})")
    if arr.size == 0:
        raise InputError(f"{name} must not be empty, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InputError(f"{name} must be finite, got NaN or inf values")
    return arr


def _unit_interval(name: str, arr: np.ndarray) -> np.ndarray:
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
        raise InputError(f"{name} must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
    return arr


def _check_tau(tau) -> float:
    if isinstance(tau, bool) or not isinstance(tau, Real) or not 0.0 < float(tau) <= 1.0:
        raise InputError(f"tau must be a number in (0, 1] (entropy threshold in bits), got {tau!r}")
    return float(tau)


def _check_spacing(spacing) -> np.ndarray:
    if spacing is None:
        return np.ones(3)
    try:
        s = np.asarray(spacing, dtype=np.float64)
    except (TypeError, ValueError):
        s = None
    if s is None or s.shape != (3,) or not np.isfinite(s).all() or (s <= 0).any():
        raise InputError(f"spacing must be 3 positive numbers (mm along I, J, K), got {spacing!r}")
    return s


def _check_margin(margin) -> tuple[int, int, int]:
    m = np.asarray(margin)
    if m.ndim == 0:
        m = np.repeat(m, 3)
    if m.shape != (3,) or m.dtype.kind not in "iu" or (m < 0).any():
        raise InputError(f"margin must be a non-negative int or 3 of them (voxels along I, J, K), got {margin!r}")
    return tuple(int(v) for v in m)


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_positive(name: str, value, *, allow_zero: bool = False) -> float:
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InputError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def _check_sigmas(sigmas) -> tuple[float, float, float] | None:
    if sigmas is None:
        return None
    try:
        s = tuple(float(v) for v in sigmas)
    except (TypeError, ValueError):
        s = ()
    if len(s) != 3 or not all(math.isfinite(v) and v > 0 for v in s):
        raise InputError(f"sigmas must be None or 3 positive numbers (σ_e, σ_i, σ_p), got {sigmas!r}")
    return s


def _check_training(epochs, lr, weight_decay, backend) -> tuple[int, float, float]:
    epochs = _check_int("epochs", epochs, 1)
    lr = _check_positive("lr", lr)
    weight_decay = _check_positive("weight_decay", weight_decay, allow_zero=True)
    if backend not in ("torch", "scipy"):
        raise InputError(f"backend must be 'torch' or 'scipy', got {backend!r}")
    return epochs, lr, weight_decay


def _check_fraction(value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 < float(value) <= 1.0:
        raise InputError(f"train_fraction must be a number in (0, 1], got {value!r}")
    return float(value)


def _check_seed(seed) -> int | None:
    if seed is None:
        return None
    return _check_int("seed", seed, 0)


# --------------------------------------------------------------------------- MC statistics


def mc_statistics(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expectation and entropy of Monte Carlo samples of the foreground probability.

    Parameters
    ----------
    samples : (T, I, J, K) ndarray
        Foreground probability of each of the ``T`` stochastic passes, in [0, 1].

    Returns
    -------
    expectation : (I, J, K) float32
        ``E(x) = (1/T) Σ_t p_t(x)``.
    entropy : (I, J, K) float32
        ``H(x) = -E log2 E - (1 - E) log2 (1 - E)`` in bits, in [0, 1].

    Notes
    -----
    This is the paper's model entropy ``U = -Σ_c P_c log P_c`` for ``M = 2``
    classes with ``P_1 = E``, written in bits so that its maximum is 1.
    """
    s = np.asarray(samples)
    if s.ndim != 4:
        raise InputError(f"samples must be a 4D (T, I, J, K) array, got shape {s.shape}")
    if s.size == 0:
        raise InputError(f"samples must not be empty, got shape {s.shape}")
    if s.dtype.kind not in "biuf" or (s.dtype.kind == "f" and not np.isfinite(s).all()):
        raise InputError(f"samples must be finite numbers, got dtype {s.dtype} or NaN/inf values")
    _unit_interval("samples", s)
    expectation = s.mean(axis=0, dtype=np.float64).astype(np.float32)
    return expectation, binary_entropy(expectation)


# --------------------------------------------------------------------------- ROI and graph


def prediction_roi(prediction: np.ndarray, *, margin=DEFAULT_MARGIN) -> tuple[slice, slice, slice] | None:
    """Bounding box of the largest connected component of ``prediction``, enlarged by ``margin``.

    Parameters
    ----------
    prediction : (I, J, K) ndarray
        Binary segmentation (foreground = non-zero).
    margin : int or 3 ints
        Voxels added on each side along I, J, K, clipped at the volume's border.

    Returns
    -------
    tuple of 3 slices, or None when the prediction is empty.

    Notes
    -----
    Components are 26-connected (``cc3d``). Other components only lie in the
    ROI if they fall inside the box.
    """
    pred = _volume("prediction", prediction) != 0
    m = _check_margin(margin)
    if not pred.any():
        return None
    largest = cc3d.largest_k(pred.view(np.uint8), k=1, connectivity=26, binary_image=True) != 0
    roi = []
    for axis in range(3):
        hit = np.flatnonzero(largest.any(axis=tuple(a for a in range(3) if a != axis)))
        lo = max(0, int(hit[0]) - m[axis])
        hi = min(pred.shape[axis], int(hit[-1]) + 1 + m[axis])
        roi.append(slice(lo, hi))
    return tuple(roi)


@dataclass(frozen=True, eq=False)
class Graph:
    """A partially labelled graph over the voxels of a ROI.

    Attributes
    ----------
    roi : tuple of 3 slices
        The box, in the full volume, that holds the nodes.
    roi_shape : (3,) tuple
        Shape of the box.
    nodes : (N,) int64
        Flat (C-order) index of each node's voxel inside the box, increasing.
    features : (N, 3) float32
        ``ours``: normalised intensity ``(V - μ) / s`` (mean and standard
        deviation over the nodes), expectation ``E`` and entropy ``H`` of each
        node. ``authors``: ``[(V - μ)/v, E, H]`` with the mean and variance
        over the ROI box, each row divided by its sum.
    labels : (N,) int8
        1 / 0 (the prediction) on confident nodes (``H ≤ τ``), -1 on uncertain ones.
    edges : (M, 2) int64
        Undirected edges ``(a, b)`` with ``a < b``, each once, self-loops excluded.
    weights : (M,) float32
        Edge weights ``w_ab``: in (0, 1] (``ours``), in (0, ∞) (``authors``).
    adjacency : torch sparse CSR tensor (N, N) float32
        ``Â = D^{-1/2} (A + I) D^{-1/2}``, symmetric.
    sigmas : (σ_e, σ_i, σ_p)
        Scales of the three terms (``authors``: σ_e = 2, the diversity's factor 0.5).
    scheme : {"ours", "authors"}
        How weights and features were made (:data:`SCHEMES`).
    """

    roi: tuple[slice, slice, slice]
    roi_shape: tuple[int, int, int]
    nodes: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    edges: np.ndarray
    weights: np.ndarray
    adjacency: torch.Tensor
    sigmas: tuple[float, float, float]
    scheme: str = "ours"
    operator: sp.csr_matrix = field(init=False, repr=False)

    def __post_init__(self):
        # A scipy view of the same arrays (no copy), for train_gcn(backend="scipy").
        a = self.adjacency
        op = sp.csr_matrix((a.values().numpy(), a.col_indices().numpy(), a.crow_indices().numpy()),
                           shape=tuple(a.shape), copy=False)
        object.__setattr__(self, "operator", op)

    @property
    def n_nodes(self) -> int:
        return int(self.nodes.size)

    @property
    def n_edges(self) -> int:
        """Undirected edges, self-loops excluded."""
        return int(self.edges.shape[0])

    @property
    def n_uncertain(self) -> int:
        return int((self.labels < 0).sum())

    @property
    def n_labelled(self) -> int:
        return int((self.labels >= 0).sum())

    def voxels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Index arrays ``(i, j, k)`` of the nodes in the full volume."""
        local = np.unravel_index(self.nodes, self.roi_shape)
        return tuple(idx + s.start for idx, s in zip(local, self.roi))


@dataclass
class _Inputs:
    roi: tuple[slice, slice, slice]
    image: np.ndarray  # ROI crops
    expectation: np.ndarray
    entropy: np.ndarray
    prediction: np.ndarray
    mask: np.ndarray  # node voxels of the ROI
    spacing: np.ndarray
    tau: float
    k: int
    seed: int | None
    sigmas: tuple[float, float, float] | None
    scheme: str = "ours"


def _node_mask(nodes: str, e_roi: np.ndarray, h_roi: np.ndarray, tau: float) -> np.ndarray:
    if nodes == "roi":
        return np.ones(e_roi.shape, dtype=bool)
    # a box dilation is separable: a maximum filter runs it as three 1D passes
    mask = ndimage.maximum_filter((h_roi > tau).view(np.uint8), size=REDUCED_DILATION, mode="constant") > 0
    if nodes == "reduced":
        mask |= e_roi > 0.5
    return mask


def _check_nodes(nodes) -> str:
    if nodes not in NODE_SETS:
        raise InputError(f"nodes must be one of {', '.join(NODE_SETS)}, got {nodes!r}")
    return nodes


def _check_scheme(graph) -> str:
    if graph not in SCHEMES:
        raise InputError(f"graph must be one of {', '.join(SCHEMES)}, got {graph!r}")
    return graph


def _check_relabel(relabel) -> str | None:
    if relabel is not None and relabel not in RELABEL:
        raise InputError(f"relabel must be None or one of {', '.join(RELABEL)}, got {relabel!r}")
    return relabel


def _prepare(image, expectation, entropy, prediction, *, tau, margin, spacing, k, seed, nodes,
             sigmas, graph="ours") -> _Inputs:
    image = _volume("image", image)
    expectation = _unit_interval("expectation", _volume("expectation", expectation, shape=image.shape))
    entropy = _unit_interval("entropy", _volume("entropy", entropy, shape=image.shape))
    prediction = _volume("prediction", prediction, shape=image.shape)
    tau = _check_tau(tau)
    roi = prediction_roi(prediction, margin=margin)
    if roi is None:
        raise InputError("prediction is empty: there is no structure to build a graph around")
    crops = [np.asarray(a[roi]) for a in (image, expectation, entropy, prediction)]
    mask = _node_mask(_check_nodes(nodes), crops[1], crops[2], tau)
    return _Inputs(roi=roi, image=crops[0], expectation=crops[1], entropy=crops[2], prediction=crops[3] != 0,
                   mask=mask, spacing=_check_spacing(spacing), tau=tau, k=_check_int("k", k, 0),
                   seed=_check_seed(seed), sigmas=_check_sigmas(sigmas), scheme=_check_scheme(graph))


def _random_pairs(n: int, k: int, seed: int | None) -> np.ndarray:
    """Random long-range pairs ``(P, 2)``: ``k`` stubs per node, shuffled and paired.

    Node ``a`` owns stubs ``a k .. a k + k - 1``; a seeded permutation pairs the
    stubs two by two (the configuration model), so every node takes part in
    exactly ``k`` pairs (one stub is left out when ``n k`` is odd). Self-pairs
    and repeated pairs are dropped by the graph builders.
    """
    if k == 0 or n < 2:
        return np.empty((0, 2), dtype=np.int64)
    stubs = np.random.default_rng(seed).permutation(n * k) // k
    return stubs[: (stubs.size // 2) * 2].reshape(-1, 2)


def _scale(d: np.ndarray) -> float:
    m = float(d.mean()) if d.size else 0.0
    return m if m > 0 else 1.0


def _to_torch_csr(m: sp.csr_matrix) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(torch.from_numpy(m.indptr), torch.from_numpy(m.indices),
                                       torch.from_numpy(m.data), size=m.shape, check_invariants=False)


def kipf_normalise(n: int, edges: np.ndarray, weights: np.ndarray) -> torch.Tensor:
    """``Â = D^{-1/2} (A + I) D^{-1/2}`` of a weighted undirected graph as a torch CSR tensor.

    Parameters
    ----------
    n : int
        Number of nodes.
    edges : (M, 2) int
        Undirected edges, each once, no self-loops.
    weights : (M,) float
        ``A_ab = A_ba = w``.

    Returns
    -------
    (n, n) torch sparse CSR tensor, float32, int32 indices (int64 past 2^31 entries).

    Notes
    -----
    ``D_aa = 1 + Σ_b A_ab`` (the degree of ``A + I``), so
    ``Â_ab = A_ab / sqrt(D_aa D_bb)`` and ``Â_aa = 1 / D_aa``.
    """
    lo, hi = edges[:, 0], edges[:, 1]
    w = np.asarray(weights, dtype=np.float64)
    deg = 1.0 + np.bincount(lo, w, minlength=n) + np.bincount(hi, w, minlength=n)
    dinv = 1.0 / np.sqrt(deg)
    off = w * dinv[lo] * dinv[hi]
    itype = np.int32 if 2 * lo.size + n < 2**31 else np.int64
    diag = np.arange(n, dtype=itype)
    rows = np.concatenate([lo, hi, diag]).astype(itype, copy=False)
    cols = np.concatenate([hi, lo, diag]).astype(itype, copy=False)
    vals = np.concatenate([off, off, 1.0 / deg]).astype(np.float32)
    del off, deg, dinv
    m = sp.csr_matrix((vals, (rows, cols)), shape=(n, n))
    m.sort_indices()
    return _to_torch_csr(m)


def build_graph(image: np.ndarray, expectation: np.ndarray, entropy: np.ndarray,
                prediction: np.ndarray, *, tau: float = 0.8, margin=DEFAULT_MARGIN, spacing=None,
                k: int = 16, seed: int | None = 0, nodes: str = "roi", sigmas=None,
                graph: str = "ours") -> Graph:
    """The partially labelled, weighted graph of the paper, built with array operations.

    Parameters
    ----------
    image : (I, J, K) ndarray
        Intensities ``V``.
    expectation : (I, J, K) ndarray
        Foreground expectation ``E`` in [0, 1].
    entropy : (I, J, K) ndarray
        Entropy ``H`` in bits, in [0, 1].
    prediction : (I, J, K) ndarray
        Binary segmentation ``Y`` (foreground = non-zero) that labels the confident nodes.
    tau : float
        Entropy threshold ``τ`` in (0, 1]: nodes with ``H > τ`` are unlabelled.
    margin : int or 3 ints
        Voxels added around the bounding box of ``Y``'s largest component
        (default :data:`DEFAULT_MARGIN`).
    spacing : 3 floats or None
        Voxel size in mm along I, J, K (None = 1 mm).
    k : int
        Random long-range partners of each node (default 16, the paper's).
    seed : int or None
        Seed of the ``numpy`` generator that pairs the nodes.
    nodes : {"roi", "reduced", "band"}
        Node set (:data:`NODE_SETS`): every ROI voxel (default), the authors'
        reduced set (the uncertain region dilated by a :data:`REDUCED_DILATION`
        box, united with ``E > 0.5``), or that dilated band alone.
    sigmas : (σ_e, σ_i, σ_p) or None
        Fixed similarity scales; None = the mean of each distance over the
        edges (``ours``) or ``(2, 2 var(d_i), 2 var(d_p))`` (``authors``).
    graph : {"ours", "authors"}
        Edge weights and node features (:data:`SCHEMES`), see below.

    Returns
    -------
    Graph

    Notes
    -----
    Nodes are the ROI voxels (or the chosen subset), with features
    ``[(V - μ)/s, E, H]``. Node ``a`` is labelled ``Y_a`` if ``H_a ≤ τ`` and -1
    otherwise.

    Edges join every pair of face neighbours (6-connectivity) and random pairs
    of nodes: each node gets ``k`` long-range partners by a seeded random
    pairing of ``k`` stubs per node (see :func:`_random_pairs`), as in the
    authors' code where a node stops at ``k`` random connections. The rare
    self-pairs and repeated pairs are dropped; the graph is undirected.

    Edge weight (a product of three similarities in (0, 1])::

        w_ab = exp(-d_e/σ_e) · exp(-d_i/σ_i) · exp(-d_p/σ_p)
        d_e = (E_a - E_b) (log2 E_a/(1-E_a) - log2 E_b/(1-E_b))
            = KL(E_a || E_b) + KL(E_b || E_a)        (Bernoulli, bits; E clipped to [1e-6, 1 - 1e-6])
        d_i = |V'_a - V'_b|                          (normalised intensities)
        d_p = ||x_a - x_b||                          (positions in mm)

    ``d_e`` is the diversity of Zhou et al. used by the paper. By default each
    ``σ`` is the mean of its distance over the edges (1 if that mean is 0), so
    an edge at the average distance is down-weighted by ``e^-1`` per term. The
    authors' code adds the terms (``0.5 d_e + e^{-d_i²/σ²} + e^{-d_p²/σ²}``);
    the product keeps every weight in (0, 1] and lets any one dissimilarity cut
    an edge.

    ``graph="authors"`` builds the same nodes and edges with the weights and
    features of the authors' code (``weighting.py``, ``gen_graph.py``,
    ``utils.load_data``)::

        w_ab = d_e / σ_e + exp(-d_i / σ_i) + exp(-d_p / σ_p),   σ_e = 2
        d_e  = (E_a - E_b) (log2(E_a / (E_b + δ) + δ) - log2((1 - E_a) / (1 - E_b + δ) + δ))
        d_i  = (V'_a - V'_b)²,   V' = (V - μ) / v   (mean and *variance* over the ROI box)
        d_p  = ||x_a / n - x_b / n||²                 (positions as fractions of the ROI size n)
        σ_i, σ_p = 2 · variance of d_i, d_p over the edges,   δ = 1e-15

    so the diversity raises the weight (more diverse pairs weigh more; the
    ``ours`` product lowers it). ``d_e`` is not symmetric in ``a, b`` when an
    ``E`` is exactly 0 or 1 (the ``δ``'s); the authors' matrix keeps both
    directions, here the two are averaged so ``A`` stays symmetric. Features
    are ``[V', E, H]``, each row divided by its sum (a row summing to 0 is set
    to 0), as their ``normalize``.

    The adjacency is normalised as in Kipf & Welling:
    ``Â = D^{-1/2} (A + I) D^{-1/2}`` (see :func:`kipf_normalise`).
    """
    inp = _prepare(image, expectation, entropy, prediction, tau=tau, margin=margin, spacing=spacing,
                   k=k, seed=seed, nodes=nodes, sigmas=sigmas, graph=graph)
    return _build(inp)


def _build(inp: _Inputs) -> Graph:
    """:func:`build_graph` on prepared inputs. Temporaries are kept narrow (int32 node ids,
    one edge-length float64 array per term) because the edge arrays set the peak memory."""
    roi_shape = inp.mask.shape
    nodes = np.flatnonzero(inp.mask)
    n = nodes.size
    e = inp.expectation.ravel()[nodes].astype(np.float64)
    h = inp.entropy.ravel()[nodes].astype(np.float64)
    labels = np.where(h > inp.tau, -1, inp.prediction.ravel()[nodes]).astype(np.int8)
    edges = _edges(inp, nodes)
    if inp.scheme == "authors":
        features, weights, s = _authors_terms(inp, nodes, e, h, edges)
    else:
        features, weights, s = _our_terms(inp, nodes, e, h, edges)
    return Graph(roi=inp.roi, roi_shape=tuple(roi_shape), nodes=nodes, features=features,
                 labels=labels, edges=edges, weights=weights,
                 adjacency=kipf_normalise(n, edges, weights), sigmas=tuple(float(v) for v in s),
                 scheme=inp.scheme)


def _edges(inp: _Inputs, nodes: np.ndarray) -> np.ndarray:
    """Undirected edges ``(M, 2)``, ``a < b``, sorted: face neighbours and random pairs."""
    roi_shape = inp.mask.shape
    n = nodes.size
    # face neighbours: node ids on the ROI grid, then consecutive pairs along each axis
    itype = np.int32 if n < 2**31 else np.int64
    index = np.full(roi_shape, -1, dtype=itype)
    index.ravel()[nodes] = np.arange(n, dtype=itype)
    pairs = []
    for axis in range(3):
        a = np.take(index, np.arange(roi_shape[axis] - 1), axis=axis).ravel()
        b = np.take(index, np.arange(1, roi_shape[axis]), axis=axis).ravel()
        keep = (a >= 0) & (b >= 0)
        pairs.append((a[keep], b[keep]))  # C order: a < b
    del index, a, b, keep
    rand = _random_pairs(n, inp.k, inp.seed)
    rand = rand[rand[:, 0] != rand[:, 1]]
    pairs.append((rand.min(axis=1), rand.max(axis=1)))
    del rand
    keys = np.concatenate([lo.astype(np.int64) * n + hi for lo, hi in pairs])
    del pairs
    keys.sort()
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]  # sort + dedupe: faster than np.unique
    edges = np.empty((keys.size, 2), dtype=itype)
    edges[:, 0], edges[:, 1] = np.divmod(keys, n)
    return edges


def _our_terms(inp: _Inputs, nodes, e, h, edges):
    """Features ``[(V - μ)/s, E, H]`` and the product weights of the ``ours`` scheme."""
    roi_shape = inp.mask.shape
    intensity = inp.image.ravel()[nodes].astype(np.float64)
    sd = float(intensity.std())
    z = (intensity - intensity.mean()) / (sd if sd > 1e-12 else 1.0)
    features = np.stack([z, e, h], axis=1).astype(np.float32)
    lo, hi = edges[:, 0], edges[:, 1]

    # the three distances, each scaled by its σ and summed into one exponent
    p = np.clip(e, PROB_EPS, 1 - PROB_EPS)
    logit = np.log2(p / (1 - p))
    d_e = (p[lo] - p[hi]) * (logit[lo] - logit[hi])
    d_i = np.abs(z[lo] - z[hi])
    d_p = np.zeros(lo.size)
    for axis, c in enumerate(np.unravel_index(nodes, roi_shape)):
        diff = (c[lo].astype(np.float64) - c[hi]) * float(inp.spacing[axis])
        d_p += diff * diff
        del diff
    np.sqrt(d_p, out=d_p)
    s = inp.sigmas or (_scale(d_e), _scale(d_i), _scale(d_p))
    exponent = d_e
    exponent /= -s[0]
    exponent -= d_i / s[1]
    del d_i
    exponent -= d_p / s[2]
    del d_p
    weights = np.exp(exponent).astype(np.float32)
    del exponent
    return features, weights, s


def _authors_divergence(ea: np.ndarray, eb: np.ndarray) -> np.ndarray:
    """The authors' diversity of the ordered pair ``(a, b)``, guards ``δ`` as in their code."""
    d = AUTHORS_DELTA
    return (ea - eb) * (np.log2(ea / (eb + d) + d) - np.log2((1 - ea) / ((1 - eb) + d) + d))


def _twice_variance(d: np.ndarray) -> float:
    v = 2.0 * float(d.var()) if d.size else 0.0
    return v if v > 0 else 1.0


def _authors_terms(inp: _Inputs, nodes, e, h, edges):
    """Features and summed weights of the ``authors`` scheme (see :func:`build_graph`)."""
    roi_shape = inp.mask.shape
    box = inp.image.astype(np.float64)
    var = float(box.var())
    v = (inp.image.ravel()[nodes].astype(np.float64) - box.mean()) / (var if var > 1e-12 else 1.0)
    del box
    raw = np.stack([v, e, h], axis=1)
    rowsum = raw.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        features = np.where(rowsum != 0, raw / rowsum, 0.0).astype(np.float32)
    del raw, rowsum
    lo, hi = edges[:, 0], edges[:, 1]
    d_e = 0.5 * (_authors_divergence(e[lo], e[hi]) + _authors_divergence(e[hi], e[lo]))
    d_i = v[lo] - v[hi]
    d_i *= d_i
    d_p = np.zeros(lo.size)
    for axis, c in enumerate(np.unravel_index(nodes, roi_shape)):
        diff = (c[lo].astype(np.float64) - c[hi]) / float(roi_shape[axis])
        d_p += diff * diff
        del diff
    s = inp.sigmas or (2.0, _twice_variance(d_i), _twice_variance(d_p))
    weights = d_e / s[0]
    weights += np.exp(-d_i / s[1])
    weights += np.exp(-d_p / s[2])
    return features, weights.astype(np.float32), s


def build_graph_reference(image: np.ndarray, expectation: np.ndarray, entropy: np.ndarray,
                          prediction: np.ndarray, *, tau: float = 0.8, margin=DEFAULT_MARGIN,
                          spacing=None, k: int = 16, seed: int | None = 0, nodes: str = "roi",
                          sigmas=None) -> Graph:
    """:func:`build_graph` written with per-node Python loops (a test oracle and speed baseline).

    Same parameters, same graph (same random draws for the same ``seed``).
    Like the authors' ``map_voxel_nodes`` and ``connect_n6_krandom``, it maps
    voxels to nodes with a dictionary, visits each node's six neighbours and
    ``k`` random partners, keeps a set of the edges already made, and computes
    each weight with scalar arithmetic. ``edges`` come in the order they were
    made (:func:`build_graph` sorts them). Do not use it for real volumes: it is
    one to two orders of magnitude slower.
    """
    inp = _prepare(image, expectation, entropy, prediction, tau=tau, margin=margin, spacing=spacing,
                   k=k, seed=seed, nodes=nodes, sigmas=sigmas)
    si, sj, sk = inp.mask.shape
    voxel_node: dict[tuple[int, int, int], int] = {}
    node_voxel: list[tuple[int, int, int]] = []
    for i in range(si):
        for j in range(sj):
            for kk in range(sk):
                if inp.mask[i, j, kk]:
                    voxel_node[(i, j, kk)] = len(node_voxel)
                    node_voxel.append((i, j, kk))
    n = len(node_voxel)

    intensity = [float(inp.image[v]) for v in node_voxel]
    mean = sum(intensity) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in intensity) / n)
    z = [(x - mean) / (sd if sd > 1e-12 else 1.0) for x in intensity]
    e = [float(inp.expectation[v]) for v in node_voxel]
    h = [float(inp.entropy[v]) for v in node_voxel]
    labels = [-1 if h[a] > inp.tau else int(inp.prediction[v]) for a, v in enumerate(node_voxel)]
    p = [min(max(x, PROB_EPS), 1 - PROB_EPS) for x in e]
    logit = [math.log2(x / (1 - x)) for x in p]
    spacing_mm = [float(s) for s in inp.spacing]

    made: set[tuple[int, int]] = set()
    edges: list[tuple[int, int]] = []
    d_e: list[float] = []
    d_i: list[float] = []
    d_p: list[float] = []

    def connect(a: int, b: int) -> None:
        key = (a, b) if a < b else (b, a)
        if a == b or key in made:
            return
        made.add(key)
        edges.append(key)
        d_e.append((p[a] - p[b]) * (logit[a] - logit[b]))
        d_i.append(abs(z[a] - z[b]))
        va, vb = node_voxel[a], node_voxel[b]
        d_p.append(math.sqrt(sum(((va[x] - vb[x]) * spacing_mm[x]) ** 2 for x in range(3))))

    partners: list[list[int]] = [[] for _ in range(n)]  # each node's random partners, stub order
    for a, b in _random_pairs(n, inp.k, inp.seed).tolist():
        partners[a].append(b)
        partners[b].append(a)
    for a, (i, j, kk) in enumerate(node_voxel):
        for di, dj, dk in ((-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)):
            b = voxel_node.get((i + di, j + dj, kk + dk))
            if b is not None:
                connect(a, b)
        for b in partners[a]:
            connect(a, b)

    def mean_or_one(d: list[float]) -> float:
        m = sum(d) / len(d) if d else 0.0
        return m if m > 0 else 1.0

    s = inp.sigmas or (mean_or_one(d_e), mean_or_one(d_i), mean_or_one(d_p))
    weights = [math.exp(-(d_e[x] / s[0] + d_i[x] / s[1] + d_p[x] / s[2])) for x in range(len(edges))]

    degree = [1.0] * n
    for (a, b), w in zip(edges, weights):
        degree[a] += w
        degree[b] += w
    rows, cols, vals = [], [], []
    for (a, b), w in zip(edges, weights):
        v = w / math.sqrt(degree[a] * degree[b])
        rows += [a, b]
        cols += [b, a]
        vals += [v, v]
    for a in range(n):
        rows.append(a)
        cols.append(a)
        vals.append(1.0 / degree[a])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        adjacency = torch.sparse_coo_tensor(torch.tensor([rows, cols], dtype=torch.int64),
                                            torch.tensor(vals, dtype=torch.float32), (n, n))
        adjacency = adjacency.coalesce().to_sparse_csr()

    nodes = np.array([(i * sj + j) * sk + kk for i, j, kk in node_voxel], dtype=np.int64)
    return Graph(roi=inp.roi, roi_shape=(si, sj, sk), nodes=nodes,
                 features=np.array([z, e, h], dtype=np.float32).T.copy(),
                 labels=np.array(labels, dtype=np.int8),
                 edges=np.array(edges, dtype=np.int64).reshape(-1, 2),
                 weights=np.array(weights, dtype=np.float32), adjacency=adjacency,
                 sigmas=tuple(float(v) for v in s))


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


@numba.njit(cache=True, fastmath=True, nogil=True)
def _hidden_forward(ax, w1, b1, w2, mask, scale, out):  # pragma: no cover - numba
    # out_i = scale Σ_j mask_ij ReLU(Σ_q ax_iq w1_qj + b1_j) w2_j
    n, f = ax.shape
    h = w1.shape[1]
    a = np.empty(h, np.float32)
    zero = np.float32(0.0)
    for i in range(n):
        for j in range(h):
            a[j] = b1[j]
        for q in range(f):
            x = ax[i, q]
            for j in range(h):
                a[j] += x * w1[q, j]
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
            for j in range(h):
                a[j] = b1[j]
            for q in range(f):
                x = ax[i, q]
                for j in range(h):
                    a[j] += x * w1[q, j]
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
        in_features = _check_int("in_features", in_features, 1)
        hidden = _check_int("hidden", hidden, 1)
        if isinstance(dropout, bool) or not isinstance(dropout, Real) or not 0.0 <= dropout < 1.0:
            raise InputError(f"dropout must be a number in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        self._rng = np.random.default_rng(_check_seed(seed))

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


@dataclass
class GCNFit:
    """A trained :class:`GCN` and its output.

    Attributes
    ----------
    model : GCN
    prob : (N,) float32
        ``σ(Z)`` of every node, dropout off.
    losses : (epochs,) float32
        Training loss at each epoch.
    seconds : float
        Wall time of the training (the ``Â X`` product included).
    """

    model: GCN
    prob: np.ndarray
    losses: np.ndarray
    seconds: float


def train_gcn(graph: Graph, *, epochs: int = 200, lr: float = 1e-2, weight_decay: float = 1e-5,
              hidden: int = 32, dropout: float = 0.5, seed: int | None = 0,
              backend: str = "torch", train_fraction: float = 1.0, loss_weight: float = 1.0) -> GCNFit:
    """Fit a :class:`GCN` to the labelled nodes of ``graph`` (semi-supervised, one volume).

    Parameters
    ----------
    graph : Graph
        From :func:`build_graph`; needs at least one labelled node.
    epochs, lr, weight_decay : int, float, float
        Full-batch Adam steps, learning rate and L2 penalty (the paper: 200, 1e-2, 1e-5).
    hidden, dropout : int, float
        Hidden units and dropout rate (the paper: 32, 0.5).
    seed : int or None
        Seeds the initial weights and the dropout masks.
    backend : {"torch", "scipy"}
        Which library multiplies by ``Â``: torch's sparse CSR product (the
        default) or scipy's CSR product on a view of the same arrays. Both
        take about 1.5 ms per one-column product for 74,000 nodes and 1.7
        million entries on one CPU core; same result up to rounding.
    train_fraction : float in (0, 1]
        Share of the labelled nodes trained on, drawn at random (seeded by
        ``seed``); the authors' code: 0.8 (:data:`AUTHORS_TRAIN_FRACTION`).
    loss_weight : float > 0
        Factor on the loss (the authors' code: 0.5, :data:`AUTHORS_LOSS_WEIGHT`).
        Adam is nearly invariant to it; it changes the balance with ``weight_decay``.

    Returns
    -------
    GCNFit

    Notes
    -----
    The loss is the binary cross-entropy over the labelled set ``L`` (or the
    random ``train_fraction`` of it), times ``loss_weight``::

        ℓ = -(1/|L|) Σ_{a∈L} [y_a log σ(Z_a) + (1 - y_a) log(1 - σ(Z_a))]

    Training runs on one thread: torch is set to one thread for the call (and
    restored), since only ``(N,)``-vector operations are left to it and, on a
    busy machine, waiting threads made them 10x slower. Measured on 2 shared
    CPU cores (load ~5): 200 epochs on 74,088 nodes and 809,534 edges take
    about 2.3 s; the same network in plain torch (``torch.sparse`` products,
    ``F.dropout`` on the ``(N, 32)`` activations) takes about 90 s.
    """
    epochs, lr, weight_decay = _check_training(epochs, lr, weight_decay, backend)
    train_fraction, loss_weight = _check_fraction(train_fraction), _check_positive("loss_weight", loss_weight)
    labelled = np.flatnonzero(graph.labels >= 0)
    if labelled.size == 0:
        raise InputError("graph has no labelled node (every node is uncertain): nothing to train on")
    if train_fraction < 1.0:
        # a separate stream (seed + 1), so the model's initial weights do not depend on the fraction
        draw = np.random.default_rng(None if seed is None else seed + 1).random(labelled.size)
        labelled = labelled[draw < train_fraction] if (draw < train_fraction).any() else labelled[:1]

    start = time.perf_counter()
    model = GCN(graph.features.shape[1], hidden, dropout=dropout, seed=seed)
    operator = graph.operator if backend == "scipy" else graph.adjacency
    x = torch.from_numpy(graph.features)
    idx = torch.from_numpy(labelled)
    y = torch.from_numpy(graph.labels[labelled].astype(np.float32))
    losses = np.empty(epochs, dtype=np.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # only (N,)-vector ops are left to torch: threads would only wait
    try:
        with torch.inference_mode(False), torch.enable_grad():
            optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
            with torch.no_grad():
                ax = propagate(operator, x).contiguous()
            model.train()
            for epoch in range(epochs):
                optimiser.zero_grad()
                loss = F.binary_cross_entropy_with_logits(model(x, operator, ax=ax)[idx], y)
                if loss_weight != 1.0:
                    loss = loss * loss_weight
                loss.backward()
                optimiser.step()
                losses[epoch] = loss.item()
            model.eval()
            with torch.no_grad():
                prob = torch.sigmoid(model(x, operator, ax=ax)).numpy().astype(np.float32)
    finally:
        torch.set_num_threads(threads)
    return GCNFit(model=model, prob=prob, losses=losses, seconds=time.perf_counter() - start)


# --------------------------------------------------------------------------- refinement


def refine_gcn(image: np.ndarray, samples: np.ndarray | None = None, *, prob: np.ndarray | None = None,
               entropy: np.ndarray | None = None, prediction: np.ndarray | None = None,
               tau: float = 0.8, spacing=None, margin=DEFAULT_MARGIN, k: int = 16,
               nodes: str = "roi", max_nodes: int | None = DEFAULT_MAX_NODES, sigmas=None,
               epochs: int = 200, lr: float = 1e-2, weight_decay: float = 1e-5, seed: int = 0,
               backend: str = "torch", graph: str = "ours", relabel: str | None = None,
               return_prob: bool = False) -> tuple[np.ndarray, dict]:
    """Refine a binary segmentation with the uncertainty-based GCN of Soberanis-Mukul et al.

    Parameters
    ----------
    image : (I, J, K) ndarray
        Intensities.
    samples : (T, I, J, K) ndarray, optional
        Monte Carlo samples of the foreground probability (e.g.
        ``Predictor("mcdropout")(image, keep_samples=True).samples``); ``E`` and
        ``H`` come from :func:`mc_statistics`. Give either ``samples`` or ``prob``.
    prob : (I, J, K) ndarray, optional
        Another model's foreground probability, used as ``E``.
    entropy : (I, J, K) ndarray, optional
        With ``prob``: its uncertainty as an entropy in bits, in [0, 1];
        None = the binary entropy of ``prob``.
    prediction : (I, J, K) ndarray, optional
        The segmentation to refine (foreground = non-zero); None = ``E > 0.5``.
    tau : float
        Entropy threshold ``τ`` in (0, 1] (the paper: 0.8).
    spacing, margin, k, nodes, sigmas
        Graph options, see :func:`build_graph`.
    max_nodes : int or None
        Most nodes in one graph (default :data:`DEFAULT_MAX_NODES`; None = no
        limit). A larger node set (a CT-sized ROI) switches to the ``band``
        node set with a ``UserWarning``; a band still larger is cut into slabs
        along the ROI's longest axis, each with at most ``max_nodes`` nodes and
        its own GCN (its own random edges and σ's). Peak memory then depends on
        ``max_nodes``, not on the ROI size.
    epochs, lr, weight_decay, seed, backend
        Training options, see :func:`train_gcn`.
    graph : {"ours", "authors"}
        Scheme (:data:`SCHEMES`): ``ours`` (default) or the authors' code's
        weights and features (:func:`build_graph`), trained on a random 80 %
        of the confident nodes with 0.5·BCE (:func:`train_gcn`).
    relabel : {"uncertain", "all"} or None
        Which nodes take the GCN's label: the uncertain ones or every node of
        the graph; None = the scheme's (``ours``: uncertain, ``authors``: all).
    return_prob : bool
        Also return, as ``info["prob"]``, an (I, J, K) float32 foreground
        probability: the GCN's ``P`` on the relabelled nodes, ``E`` elsewhere
        (e.g. the unary of a dense CRF run after the GCN).

    Returns
    -------
    refined : (I, J, K) uint8
        0/1. The relabelled nodes (``relabel``) take the GCN's label
        ``P > 0.5``; every other voxel, inside the ROI or not, keeps the
        prediction.
    info : dict
        ``seconds_graph``, ``seconds_train``, ``seconds_total``, ``n_nodes``,
        ``n_edges`` (undirected, without self-loops), ``n_uncertain``,
        ``n_labelled``, ``n_changed`` (voxels whose label changed), ``roi``
        (``[(start, stop)] * 3`` or None), ``sigmas`` (of the first graph),
        ``tau``, ``node_set`` (the one used), ``graph``, ``relabel``,
        ``n_graphs`` (slabs; 1 normally) and ``reason``: None when the GCN ran, else why the prediction was
        returned unchanged.

    Notes
    -----
    Cases where there is nothing to learn return the prediction unchanged,
    with ``info["reason"]`` saying why:

    - empty prediction (no ROI): also a ``UserWarning``;
    - no uncertain node in the ROI (e.g. ``τ = 1``): nothing to relabel, no warning;
    - the confident nodes hold one class only (e.g. a prediction filling the
      whole volume, or every node uncertain): a GCN trained on one class
      would only copy it, so the prediction is kept; also a ``UserWarning``.

    A volume with a single slice (``K = 1``, or any axis of length 1) works:
    its nodes simply have no neighbours along that axis. Inputs are not modified.
    """
    start = time.perf_counter()
    image = _volume("image", image)
    if (samples is None) == (prob is None):
        given = "both" if samples is not None else "neither"
        raise InputError(f"give exactly one of samples (T, I, J, K) or prob (I, J, K), got {given}")
    if samples is not None:
        s = np.asarray(samples)
        if s.ndim != 4 or s.shape[1:] != image.shape:
            raise InputError(f"samples (shape {s.shape}) must be (T, I, J, K) with (I, J, K) equal to "
                             f"the image shape {image.shape}")
        if entropy is not None:
            raise InputError("entropy is computed from samples; pass entropy only with prob")
        e, h = mc_statistics(s)
    else:
        e = _unit_interval("prob", _volume("prob", prob, shape=image.shape))
        if entropy is None:
            h = binary_entropy(e)
        else:
            h = _unit_interval("entropy", _volume("entropy", entropy, shape=image.shape))
    if prediction is None:
        pred = e > 0.5
    else:
        pred = _volume("prediction", prediction, shape=image.shape) != 0
    tau = _check_tau(tau)
    # every option is checked now, even when an empty prediction ends the call early
    _check_spacing(spacing)
    _check_margin(margin)
    _check_int("k", k, 0)
    _check_sigmas(sigmas)
    _check_seed(seed)
    _check_nodes(nodes)
    _check_scheme(graph)
    relabel = _check_relabel(relabel) or ("all" if graph == "authors" else "uncertain")
    if max_nodes is not None:
        max_nodes = _check_int("max_nodes", max_nodes, 1)
    _check_training(epochs, lr, weight_decay, backend)

    refined = pred.astype(np.uint8)
    soft = np.array(e, dtype=np.float32) if return_prob else None
    info = {"seconds_graph": 0.0, "seconds_train": 0.0, "seconds_total": 0.0, "n_nodes": 0,
            "n_edges": 0, "n_uncertain": 0, "n_labelled": 0, "n_changed": 0, "roi": None,
            "sigmas": None, "tau": tau, "node_set": nodes, "graph": graph, "relabel": relabel,
            "n_graphs": 0, "reason": None}

    if return_prob:
        info["prob"] = soft

    def unchanged(reason: str, warn: bool):
        if warn:
            warnings.warn(f"refine_gcn: {reason}; the prediction is returned unchanged", stacklevel=3)
        info["reason"] = reason
        info["seconds_total"] = time.perf_counter() - start
        return refined, info

    if not pred.any():
        return unchanged("empty prediction: no structure to refine", True)

    t0 = time.perf_counter()
    inp = _prepare(image, e, h, pred, tau=tau, margin=margin, spacing=spacing, k=k, seed=seed,
                   nodes=nodes, sigmas=sigmas, graph=graph)
    info["roi"] = [(s.start, s.stop) for s in inp.roi]
    n_set = int(inp.mask.sum())
    if max_nodes is not None and n_set > max_nodes and nodes != "band":
        inp.mask = _node_mask("band", inp.expectation, inp.entropy, tau)
        info["node_set"] = "band"
        warnings.warn(f"refine_gcn: the {nodes} node set has {n_set} nodes > max_nodes = {max_nodes}; "
                      f"using the uncertain region dilated by {REDUCED_DILATION} ({int(inp.mask.sum())} "
                      f"nodes)", stacklevel=2)
    parts = _slabs(inp, max_nodes)
    info["seconds_graph"] += time.perf_counter() - t0
    reasons = []
    for part in parts:
        t0 = time.perf_counter()
        g = _build(part)
        info["seconds_graph"] += time.perf_counter() - t0
        info["n_graphs"] += 1
        info["n_nodes"] += g.n_nodes
        info["n_edges"] += g.n_edges
        info["n_uncertain"] += g.n_uncertain
        info["n_labelled"] += g.n_labelled
        if info["sigmas"] is None:
            info["sigmas"] = list(g.sigmas)
        if g.n_uncertain == 0:
            reasons.append((f"no uncertain node (H > {tau:g}) in the ROI: nothing to relabel", False))
            continue
        classes = np.unique(g.labels[g.labels >= 0])
        if classes.size < 2:
            which = "none" if classes.size == 0 else ("foreground" if classes[0] == 1 else "background")
            reasons.append((f"the confident nodes of the ROI hold {which} only (one class or none): "
                            f"the GCN has nothing to separate", True))
            continue
        authors = g.scheme == "authors"
        fit = train_gcn(g, epochs=epochs, lr=lr, weight_decay=weight_decay, seed=seed, backend=backend,
                        train_fraction=AUTHORS_TRAIN_FRACTION if authors else 1.0,
                        loss_weight=AUTHORS_LOSS_WEIGHT if authors else 1.0)
        info["seconds_train"] += fit.seconds
        chosen = g.labels < 0 if relabel == "uncertain" else np.ones(g.n_nodes, dtype=bool)
        where = tuple(v[chosen] for v in g.voxels())
        new = (fit.prob[chosen] > 0.5).astype(np.uint8)
        info["n_changed"] += int((refined[where] != new).sum())
        refined[where] = new
        if soft is not None:
            soft[where] = fit.prob[chosen]
        del g, fit
    if len(reasons) == len(parts):  # no graph was trained: say why (the first graph's reason)
        return unchanged(*reasons[0])
    info["seconds_total"] = time.perf_counter() - start
    return refined, info


def _slabs(inp: _Inputs, max_nodes: int | None) -> list[_Inputs]:
    """Cut ``inp`` along its longest axis into slabs of at most ``max_nodes`` nodes (whole planes;
    a single plane over the limit stays one slab)."""
    total = int(inp.mask.sum())
    if max_nodes is None or total <= max_nodes:
        return [inp]
    axis = int(np.argmax(inp.mask.shape))
    per_plane = inp.mask.sum(axis=tuple(a for a in range(3) if a != axis))
    bounds, start, count = [], 0, 0
    for i, c in enumerate(per_plane):
        if count and count + c > max_nodes:
            bounds.append((start, i))
            start, count = i, 0
        count += int(c)
    bounds.append((start, len(per_plane)))
    parts = []
    for lo, hi in bounds:
        cut = [slice(None)] * 3
        cut[axis] = slice(lo, hi)
        cut = tuple(cut)
        roi = list(inp.roi)
        roi[axis] = slice(inp.roi[axis].start + lo, inp.roi[axis].start + hi)
        parts.append(replace(inp, roi=tuple(roi), image=inp.image[cut], expectation=inp.expectation[cut],
                             entropy=inp.entropy[cut], prediction=inp.prediction[cut], mask=inp.mask[cut]))
    return parts
