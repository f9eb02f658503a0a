"""Refinement of a segmentation with the GCN: the whole pipeline, slabs for large ROIs."""

from __future__ import annotations

import time
import warnings
from dataclasses import replace

import numpy as np

from segrefine.errors import InputError
from segrefine.refine.gcn.graph import (
    AUTHORS_LOSS_WEIGHT,
    AUTHORS_TRAIN_FRACTION,
    DEFAULT_MARGIN,
    DEFAULT_MAX_NODES,
    NODE_SETS,
    REDUCED_DILATION,
    RELABEL,
    SCHEMES,
    _build,
    _check_margin,
    _check_sigmas,
    _check_training,
    _Inputs,
    _node_mask,
    _prepare,
    mc_statistics,
)
from segrefine.refine.gcn.train import train_gcn
from segrefine.uncertainty import binary_entropy
from segrefine.validate import as_choice, as_number, as_spacing, as_volume, in_unit_interval

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
    image = as_volume(image, "image")
    if (samples is None) == (prob is None):
        given = "both" if samples is not None else "neither"
        raise InputError(f"give exactly one of samples (T, I, J, K) or prob (I, J, K), got {given}")
    if samples is not None:
        s = np.asarray(samples)
        if s.ndim != 4 or s.shape[1:] != image.shape:
            raise InputError(f"`samples` (shape {s.shape}) must be (T, I, J, K) with (I, J, K) equal to "
                             f"the image shape {image.shape}")
        if entropy is not None:
            raise InputError("entropy is computed from samples; pass entropy only with prob")
        e, h = mc_statistics(s)
    else:
        e = in_unit_interval(as_volume(prob, "prob", shape=image.shape), "prob")
        if entropy is None:
            h = binary_entropy(e)
        else:
            h = in_unit_interval(as_volume(entropy, "entropy", shape=image.shape), "entropy")
    if prediction is None:
        pred = e > 0.5
    else:
        pred = as_volume(prediction, "prediction", shape=image.shape) != 0
    tau = as_number(tau, "tau", low=0.0, high=1.0, low_open=True)
    # every option is checked now, even when an empty prediction ends the call early
    np.asarray(as_spacing(spacing, 3))
    _check_margin(margin)
    as_number(k, "k", low=0, integer=True)
    _check_sigmas(sigmas)
    as_number(seed, "seed", low=0, integer=True, allow_none=True)
    as_choice(nodes, "nodes", NODE_SETS)
    as_choice(graph, "graph", SCHEMES)
    relabel = as_choice(relabel, "relabel", RELABEL, allow_none=True) or ("all" if graph == "authors" else "uncertain")
    if max_nodes is not None:
        max_nodes = as_number(max_nodes, "max_nodes", low=1, integer=True)
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
