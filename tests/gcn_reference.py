"""The GCN graph built with per-node Python loops, as the authors' public code does: a test oracle
for the vectorised :func:`segrefine.refine.gcn.build_graph` and the speed baseline of `bench gcn`."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from segrefine.refine.gcn.graph import DEFAULT_MARGIN, PROB_EPS, Graph, _prepare, _random_pairs


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
