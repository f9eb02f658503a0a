"""Graph of the GCN refinement: input checks, MC statistics, ROI, nodes, edges, weights, features."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import cc3d
import numpy as np
import scipy.sparse as sp
import torch
from scipy import ndimage

from segrefine.errors import InputError
from segrefine.uncertainty import binary_entropy
from segrefine.validate import (
    as_array,
    as_choice,
    as_number,
    as_spacing,
    as_volume,
    in_unit_interval,
)

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


def _check_margin(margin) -> tuple[int, int, int]:
    m = np.asarray(margin)
    if m.ndim == 0:
        m = np.repeat(m, 3)
    if m.shape != (3,) or m.dtype.kind not in "iu" or (m < 0).any():
        raise InputError(f"`margin` must be a non-negative int or 3 of them (voxels along I, J, K), "
                         f"got {margin!r}")
    return tuple(int(v) for v in m)


def _check_sigmas(sigmas) -> tuple[float, float, float] | None:
    if sigmas is None:
        return None
    try:
        s = tuple(float(v) for v in sigmas)
    except (TypeError, ValueError):
        s = ()
    if len(s) != 3 or not all(math.isfinite(v) and v > 0 for v in s):
        raise InputError(f"`sigmas` must be None or 3 positive numbers (σ_e, σ_i, σ_p), got {sigmas!r}")
    return s


def _check_training(epochs, lr, weight_decay, backend) -> tuple[int, float, float]:
    epochs = as_number(epochs, "epochs", low=1, integer=True)
    lr = as_number(lr, "lr", low=0.0, low_open=True)
    weight_decay = as_number(weight_decay, "weight_decay", low=0.0)
    as_choice(backend, "backend", ("torch", "scipy"))
    return epochs, lr, weight_decay


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
    s = in_unit_interval(as_array(samples, "samples", ndim=4), "samples")
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
    pred = as_volume(prediction, "prediction") != 0
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


def _prepare(image, expectation, entropy, prediction, *, tau, margin, spacing, k, seed, nodes,
             sigmas, graph="ours") -> _Inputs:
    image = as_volume(image, "image")
    expectation = in_unit_interval(as_volume(expectation, "expectation", shape=image.shape), "expectation")
    entropy = in_unit_interval(as_volume(entropy, "entropy", shape=image.shape), "entropy")
    prediction = as_volume(prediction, "prediction", shape=image.shape)
    tau = as_number(tau, "tau", low=0.0, high=1.0, low_open=True)
    roi = prediction_roi(prediction, margin=margin)
    if roi is None:
        raise InputError("prediction is empty: there is no structure to build a graph around")
    crops = [np.asarray(a[roi]) for a in (image, expectation, entropy, prediction)]
    mask = _node_mask(as_choice(nodes, "nodes", NODE_SETS), crops[1], crops[2], tau)
    return _Inputs(roi=roi, image=crops[0], expectation=crops[1], entropy=crops[2], prediction=crops[3] != 0,
                   mask=mask, spacing=np.asarray(as_spacing(spacing, 3)), tau=tau, k=as_number(k, "k", low=0, integer=True),
                   seed=as_number(seed, "seed", low=0, integer=True, allow_none=True), sigmas=_check_sigmas(sigmas), scheme=as_choice(graph, "graph", SCHEMES))


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
