"""Semi-supervised training of the GCN on one graph."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from segrefine.errors import InputError
from segrefine.refine.gcn.graph import Graph, _check_training
from segrefine.refine.gcn.model import GCN, propagate
from segrefine.validate import as_number


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
    train_fraction, loss_weight = as_number(train_fraction, "train_fraction", low=0.0, high=1.0, low_open=True), as_number(loss_weight, "loss_weight", low=0.0, low_open=True)
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
