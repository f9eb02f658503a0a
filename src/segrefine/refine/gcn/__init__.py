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

The package: :mod:`~segrefine.refine.gcn.graph` (checks, MC statistics, ROI,
graph), :mod:`~segrefine.refine.gcn.model` (the network),
:mod:`~segrefine.refine.gcn.train` (training) and
:mod:`~segrefine.refine.gcn.refine` (the pipeline). ``build_graph_reference``
in ``tests/gcn_reference.py`` builds the same graph with per-node Python
loops, as the authors' public code does: a test oracle and the speed baseline
of ``bench gcn`` for the vectorised :func:`build_graph`.

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

from segrefine.refine.gcn.graph import (
    AUTHORS_DELTA,
    AUTHORS_LOSS_WEIGHT,
    AUTHORS_TRAIN_FRACTION,
    DEFAULT_MARGIN,
    DEFAULT_MAX_NODES,
    NODE_SETS,
    PROB_EPS,
    REDUCED_DILATION,
    RELABEL,
    SCHEMES,
    Graph,
    build_graph,
    kipf_normalise,
    mc_statistics,
    prediction_roi,
)
from segrefine.refine.gcn.model import GCN, propagate
from segrefine.refine.gcn.refine import refine_gcn
from segrefine.refine.gcn.train import GCNFit, train_gcn

__all__ = [
    "AUTHORS_DELTA", "AUTHORS_LOSS_WEIGHT", "AUTHORS_TRAIN_FRACTION", "DEFAULT_MARGIN", "DEFAULT_MAX_NODES",
    "GCN", "NODE_SETS", "PROB_EPS", "REDUCED_DILATION", "RELABEL", "SCHEMES", "GCNFit", "Graph", "build_graph",
    "kipf_normalise", "mc_statistics", "prediction_roi", "propagate", "refine_gcn", "train_gcn",
]
