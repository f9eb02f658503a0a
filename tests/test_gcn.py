"""GCN refinement (segrefine.refine.gcn): graph, normalisation, network, refinement, bad input."""

import math
import warnings

import numpy as np
import pytest
import torch
from gcn_reference import build_graph_reference

from segrefine.errors import InputError
from segrefine.metrics import dice
from segrefine.refine.gcn import (
    GCN,
    build_graph,
    kipf_normalise,
    mc_statistics,
    prediction_roi,
    refine_gcn,
    train_gcn,
)
from segrefine.refine.gcn.graph import _prepare
from segrefine.refine.gcn.refine import _slabs
from segrefine.uncertainty import binary_entropy


def sphere_phantom(seed=0, shape=(28, 28, 28), shift=2, radius=7.0):
    """A sphere and a prediction shifted by ``shift`` voxels along I.

    Where they disagree (the error band) the expectation hesitates (0.55 where
    the prediction says foreground, 0.45 where it says background: H > 0.99
    bits); elsewhere it is confident (0.95 / 0.05: H = 0.29 bits). The image
    shows the true sphere with noise.
    """
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=float) for s in shape], indexing="ij"))
    centre = np.array([(s - 1) / 2 for s in shape])[:, None, None, None]
    truth = ((grid - centre) ** 2).sum(0) < radius**2
    centre[0] += shift
    pred = ((grid - centre) ** 2).sum(0) < radius**2
    band = truth != pred
    e = np.where(band, np.where(pred, 0.55, 0.45), np.where(pred, 0.95, 0.05)).astype(np.float32)
    image = (100 + 50 * truth + rng.normal(0, 8, shape)).astype(np.float32)
    return image, e, truth, pred, band


def tiny_case(seed=3, shape=(9, 10, 8)):
    """Small volume with a blob prediction, a smooth expectation and an uncertain rim."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=float) for s in shape], indexing="ij"))
    centre = np.array([(s - 1) / 2 for s in shape])[:, None, None, None]
    r = np.sqrt(((grid - centre) ** 2).sum(0))
    e = (1 / (1 + np.exp(2.0 * (r - 2.5)))).astype(np.float32)
    image = (e * 40 + rng.normal(0, 5, shape)).astype(np.float32)
    return image, e, binary_entropy(e), e > 0.5


# --------------------------------------------------------------------------- statistics, ROI


def test_mc_statistics_mean_and_entropy_in_bits():
    samples = np.stack([np.full((2, 3, 4), v, np.float32) for v in (0.2, 0.8, 0.5, 0.5)])
    samples[:, 0, 0, 0] = 1.0
    e, h = mc_statistics(samples)
    assert e.shape == h.shape == (2, 3, 4) and e.dtype == h.dtype == np.float32
    np.testing.assert_allclose(e[1, 1, 1], 0.5)
    np.testing.assert_allclose(h[1, 1, 1], 1.0, atol=1e-6)  # maximum entropy: 1 bit
    assert e[0, 0, 0] == 1.0 and h[0, 0, 0] == 0.0


def test_mc_statistics_rejects_bad_samples():
    with pytest.raises(InputError, match="`samples` must be a 4D"):
        mc_statistics(np.zeros((4, 5, 6)))
    with pytest.raises(InputError, match=r"`samples` must be a probability in \[0, 1\]"):
        mc_statistics(np.full((2, 3, 3, 3), 1.5))
    bad = np.zeros((2, 3, 3, 3))
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(InputError, match="finite"):
        mc_statistics(bad)


def test_roi_is_box_of_largest_component_plus_margin():
    pred = np.zeros((20, 20, 20), np.uint8)
    pred[5:10, 6:12, 7:9] = 1  # largest component
    pred[17, 17, 17] = 1  # a speck: not in the ROI
    assert prediction_roi(pred, margin=2) == (slice(3, 12), slice(4, 14), slice(5, 11))
    assert prediction_roi(pred, margin=(0, 1, 30)) == (slice(5, 10), slice(5, 13), slice(0, 20))
    assert prediction_roi(np.zeros_like(pred)) is None


# --------------------------------------------------------------------------- graph


@pytest.mark.parametrize("reduced", [False, True])
def test_vectorised_build_equals_reference_loops(reduced):
    image, e, h, pred = tiny_case(shape=(16, 18, 16)) if reduced else tiny_case()
    kw = {"tau": 0.8, "margin": 4 if reduced else 2, "spacing": (1.0, 0.8, 2.5), "k": 5, "seed": 7,
          "nodes": "reduced" if reduced else "roi"}
    fast = build_graph(image, e, h, pred, **kw)
    ref = build_graph_reference(image, e, h, pred, **kw)
    if reduced:
        assert 0 < fast.n_nodes < int(np.prod(fast.roi_shape))  # the reduced set is a real subset
    assert fast.roi == ref.roi and fast.n_nodes == ref.n_nodes
    np.testing.assert_array_equal(fast.nodes, ref.nodes)
    np.testing.assert_array_equal(fast.labels, ref.labels)
    np.testing.assert_allclose(fast.features, ref.features, rtol=1e-5, atol=1e-6)
    order = np.lexsort((ref.edges[:, 1], ref.edges[:, 0]))
    np.testing.assert_array_equal(fast.edges, ref.edges[order])
    np.testing.assert_allclose(fast.weights, ref.weights[order], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(fast.sigmas, ref.sigmas, rtol=1e-9)
    np.testing.assert_allclose(fast.adjacency.to_dense().numpy(), ref.adjacency.to_dense().numpy(),
                               rtol=1e-5, atol=1e-7)


def test_graph_nodes_labels_and_edges():
    image, e, h, pred = tiny_case()
    k = 4
    g = build_graph(image, e, h, pred, tau=0.8, margin=1, k=k, seed=0)
    n = g.n_nodes
    assert n == int(np.prod(g.roi_shape))  # every ROI voxel is a node
    assert g.features.shape == (n, 3) and g.features.dtype == np.float32
    np.testing.assert_allclose(g.features[:, 0].mean(), 0.0, atol=1e-5)  # z-scored intensity
    np.testing.assert_allclose(g.features[:, 0].std(), 1.0, atol=1e-5)
    vox = g.voxels()
    hv = h[vox]
    np.testing.assert_array_equal(g.labels == -1, hv > 0.8)
    np.testing.assert_array_equal(g.labels[hv <= 0.8], pred[vox][hv <= 0.8].astype(np.int8))
    assert g.n_uncertain + g.n_labelled == n and g.n_uncertain > 0
    # every face-neighbour pair is an edge, each edge once with a < b
    assert (g.edges[:, 0] < g.edges[:, 1]).all()
    keys = set(map(tuple, g.edges.tolist()))
    index = np.arange(n).reshape(g.roi_shape)
    faces = 0
    for axis in range(3):
        a = np.take(index, range(g.roi_shape[axis] - 1), axis=axis).ravel()
        b = np.take(index, range(1, g.roi_shape[axis]), axis=axis).ravel()
        faces += a.size
        assert all((int(x), int(y)) in keys for x, y in zip(a, b))
    # random pairing: k partners per node, less the rare self-pairs and repeats
    assert faces + 0.9 * n * k / 2 <= g.n_edges <= faces + n * k / 2
    assert ((g.weights > 0) & (g.weights <= 1)).all()


def test_face_neighbours_weigh_more_than_distant_partners():
    image, e, h, pred = tiny_case()
    g = build_graph(image, e, h, pred, margin=1, k=8, seed=0)
    coords = np.stack(g.voxels(), 1)
    dist = np.linalg.norm(coords[g.edges[:, 0]] - coords[g.edges[:, 1]], axis=1)
    assert np.median(g.weights[dist == 1]) > np.median(g.weights[dist > 4])


def test_kipf_normalisation():
    image, e, h, pred = tiny_case()
    g = build_graph(image, e, h, pred, margin=1, k=3, seed=1)
    n = g.n_nodes
    a = np.zeros((n, n))
    a[g.edges[:, 0], g.edges[:, 1]] = g.weights
    a += a.T
    d = 1.0 + a.sum(1)  # degree of A + I
    norm = g.adjacency.to_dense().numpy().astype(np.float64)
    np.testing.assert_allclose(norm, norm.T, atol=1e-7)
    np.testing.assert_allclose(norm, (a + np.eye(n)) / np.sqrt(np.outer(d, d)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.diag(norm), 1 / d, rtol=1e-5)
    # rows: Σ_b Â_ab sqrt(d_b) = sqrt(d_a), the eigenvector of eigenvalue 1
    np.testing.assert_allclose(norm @ np.sqrt(d), np.sqrt(d), rtol=1e-5)
    # an isolated node keeps itself only
    lone = kipf_normalise(2, np.empty((0, 2), np.int64), np.empty(0)).to_dense().numpy()
    np.testing.assert_array_equal(lone, np.eye(2))


def test_same_seed_same_graph_other_seed_other_edges():
    image, e, h, pred = tiny_case()
    g1 = build_graph(image, e, h, pred, margin=1, k=4, seed=5)
    g2 = build_graph(image, e, h, pred, margin=1, k=4, seed=5)
    g3 = build_graph(image, e, h, pred, margin=1, k=4, seed=6)
    np.testing.assert_array_equal(g1.edges, g2.edges)
    np.testing.assert_array_equal(g1.weights, g2.weights)
    assert g1.edges.shape != g3.edges.shape or not np.array_equal(g1.edges, g3.edges)


# --------------------------------------------------------------------------- network


def test_gcn_matches_dense_formula_and_its_gradients():
    image, e, h, pred = tiny_case()
    g = build_graph(image, e, h, pred, margin=1, k=4, seed=0)
    a = g.adjacency.to_dense()
    x = torch.from_numpy(g.features)
    for adjacency in (g.operator, g.adjacency):  # scipy and torch products
        model = GCN(3, 32, dropout=0.0, seed=2).train()
        z = model(x, adjacency)
        (z**2).sum().backward()
        w1, b1, w2, b2 = (p.detach().clone().requires_grad_() for p in model.parameters())
        dense = (a @ torch.relu(a @ x @ w1 + b1) @ w2 + b2)[:, 0]
        (dense**2).sum().backward()
        torch.testing.assert_close(z, dense, rtol=1e-4, atol=1e-5)
        for p, q in zip(model.parameters(), (w1, b1, w2, b2)):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-4)


def test_dropout_is_seeded_and_off_in_eval():
    image, e, h, pred = tiny_case()
    g = build_graph(image, e, h, pred, margin=1, k=4, seed=0)
    x = torch.from_numpy(g.features)
    m1, m2 = GCN(seed=4).train(), GCN(seed=4).train()
    with torch.no_grad():
        z1, z2 = m1(x, g.operator), m2(x, g.operator)
        torch.testing.assert_close(z1, z2, rtol=0, atol=0)
        assert not torch.equal(m1(x, g.operator), z1)  # a fresh mask each call
        m1.eval()
        torch.testing.assert_close(m1(x, g.operator), m1(x, g.operator), rtol=0, atol=0)


def test_train_gcn_is_deterministic_and_leaves_torch_state_alone():
    image, e, h, pred = tiny_case()
    g = build_graph(image, e, h, pred, margin=1, k=4, seed=0)
    threads = torch.get_num_threads()
    state = torch.random.get_rng_state()
    f1 = train_gcn(g, epochs=30, seed=3)
    f2 = train_gcn(g, epochs=30, seed=3)
    np.testing.assert_array_equal(f1.prob, f2.prob)
    np.testing.assert_array_equal(f1.losses, f2.losses)
    assert f1.losses[-1] < f1.losses[0]
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.get_num_threads() == threads
    fs = train_gcn(g, epochs=30, seed=3, backend="scipy")
    np.testing.assert_allclose(fs.prob, f1.prob, atol=1e-4)


def test_authors_scheme_matches_their_formula_edge_by_edge():
    """graph="authors": summed weights, diversity counted positively, σ = 2 var, positions as
    fractions of the ROI, intensities (V - μ)/variance over the box, rows of features summing to 1."""
    image, e, h, pred = tiny_case(shape=(12, 11, 10))
    e = e.copy()
    e[6, 5, 5] = 1.0  # exact 0 / 1 expectations exercise the δ guards
    e[0, 0, 0] = 0.0
    h = binary_entropy(e)
    g = build_graph(image, e, h, pred, tau=0.8, margin=2, k=5, seed=3, graph="authors")
    ours = build_graph(image, e, h, pred, tau=0.8, margin=2, k=5, seed=3)
    assert g.scheme == "authors" and ours.scheme == "ours"
    np.testing.assert_array_equal(g.edges, ours.edges)  # same nodes and edges, other weights
    box = image[g.roi].astype(np.float64)
    shape = box.shape
    v = (box - box.mean()) / box.var()
    coords = np.array(np.unravel_index(g.nodes, shape)).T
    ev = e[g.roi].astype(np.float64).ravel()[g.nodes]
    hv = h[g.roi].astype(np.float64).ravel()[g.nodes]
    vv = v.ravel()[g.nodes]

    def div(p1, p2):  # one direction, as their weights_for
        d = 1e-15
        return (p1 - p2) * (math.log2(p1 / (p2 + d) + d) - math.log2((1 - p1) / ((1 - p2) + d) + d))

    d_i = [(vv[a] - vv[b]) ** 2 for a, b in g.edges]
    d_p = [sum(((coords[a][x] - coords[b][x]) / shape[x]) ** 2 for x in range(3)) for a, b in g.edges]
    s_i, s_p = 2 * np.var(d_i), 2 * np.var(d_p)
    np.testing.assert_allclose(g.sigmas, (2.0, s_i, s_p), rtol=1e-9)
    want = [0.5 * 0.5 * (div(ev[a], ev[b]) + div(ev[b], ev[a])) + math.exp(-di / s_i) + math.exp(-dp / s_p)
            for (a, b), di, dp in zip(g.edges, d_i, d_p)]
    np.testing.assert_allclose(g.weights, want, rtol=1e-5)
    raw = np.stack([vv, ev, hv], 1)
    np.testing.assert_allclose(g.features, raw / raw.sum(1, keepdims=True), rtol=1e-4)
    # the diversity raises the authors' weights and lowers ours
    d_e = np.array([div(ev[a], ev[b]) for a, b in g.edges])
    assert np.corrcoef(d_e, g.weights)[0, 1] > 0.5
    assert np.corrcoef(d_e, ours.weights)[0, 1] < 0
    assert g.weights.max() > 2  # a sum, not bounded by 1


def test_train_fraction_and_loss_weight():
    image, e, h, pred = tiny_case(shape=(16, 18, 16))
    g = build_graph(image, e, h, pred, margin=2, k=4, seed=0)
    full = train_gcn(g, epochs=1, seed=2)
    half = train_gcn(g, epochs=1, seed=2, loss_weight=0.5)
    np.testing.assert_allclose(half.losses[0], 0.5 * full.losses[0], rtol=1e-6)  # same init, half the loss
    a = train_gcn(g, epochs=20, seed=2, train_fraction=0.8)
    b = train_gcn(g, epochs=20, seed=2, train_fraction=0.8)
    np.testing.assert_array_equal(a.prob, b.prob)  # the subset is seeded
    assert a.losses[0] != full.losses[0]  # another subset, another first loss
    for bad in (0, 1.5, -0.2, True):
        with pytest.raises(InputError, match="train_fraction"):
            train_gcn(g, epochs=1, train_fraction=bad)
    with pytest.raises(InputError, match="loss_weight"):
        train_gcn(g, epochs=1, loss_weight=0)


def test_authors_scheme_relabels_every_node():
    image, e, truth, pred, band = sphere_phantom()
    refined, info = refine_gcn(image, prob=e, graph="authors", nodes="reduced", margin=3, epochs=100)
    assert info["graph"] == "authors" and info["relabel"] == "all" and info["reason"] is None
    g = build_graph(image, e, binary_entropy(e), e > 0.5, margin=3, nodes="reduced", graph="authors")
    off_graph = np.ones(image.shape, bool)
    off_graph[g.voxels()] = False
    np.testing.assert_array_equal(refined[off_graph], pred[off_graph])  # outside the graph: the prediction
    assert dice(refined, truth) > 0.5
    kept, info = refine_gcn(image, prob=e, graph="authors", nodes="reduced", margin=3, epochs=100,
                            relabel="uncertain")
    assert info["relabel"] == "uncertain"
    np.testing.assert_array_equal(kept[~band], pred[~band])  # only the uncertain band may change
    with pytest.raises(InputError, match="`graph` must be one of"):
        refine_gcn(image, prob=e, graph="theirs")
    with pytest.raises(InputError, match="`relabel` must be"):
        refine_gcn(image, prob=e, relabel="confident")


# --------------------------------------------------------------------------- refinement


def test_gcn_fixes_most_of_the_uncertain_band():
    image, e, truth, pred, band = sphere_phantom()
    samples = np.stack([np.clip(e + d, 0, 1) for d in (-0.02, 0.02)])  # mean = e
    before = (image.copy(), samples.copy())
    # the true sphere reaches 2 voxels past the prediction's box: a margin of 3 takes it in
    refined, info = refine_gcn(image, samples, tau=0.8, margin=3)
    np.testing.assert_array_equal(image, before[0])  # inputs untouched
    np.testing.assert_array_equal(samples, before[1])
    assert refined.dtype == np.uint8 and refined.shape == image.shape
    assert info["reason"] is None and info["n_uncertain"] == band.sum()
    assert ((refined[band] == 1) == truth[band]).mean() >= 0.8  # was 0 before
    assert dice(refined, truth) > dice(pred, truth) + 0.1
    np.testing.assert_array_equal(refined[~band], pred[~band])  # confident voxels keep their label
    assert info["n_changed"] == (refined != pred).sum() > 0
    assert info["seconds_graph"] > 0 and info["seconds_train"] > 0
    assert info["n_edges"] > 3 * info["n_nodes"]


def test_voxels_outside_the_roi_keep_the_prediction():
    image, e, *_ = sphere_phantom()
    e = e.copy()
    e[0:2, 0:2, 0:2] = 0.55  # an uncertain foreground speck far from the ROI
    refined, info = refine_gcn(image, prob=e)
    assert refined[0:2, 0:2, 0:2].all()
    (i0, _), _, _ = info["roi"]
    assert i0 > 2


def test_prob_path_and_samples_path_agree():
    image, e, *_ = sphere_phantom(shape=(24, 24, 24), radius=6.0)
    r1, _ = refine_gcn(image, np.stack([e, e]), epochs=40)
    r2, _ = refine_gcn(image, prob=e, epochs=40)
    r3, _ = refine_gcn(image, prob=e, entropy=binary_entropy(e), epochs=40)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(r2, r3)


def test_refine_is_deterministic_for_a_seed():
    image, e, *_ = sphere_phantom(shape=(24, 24, 24), radius=6.0)
    a, _ = refine_gcn(image, prob=e, epochs=40, seed=1)
    b, _ = refine_gcn(image, prob=e, epochs=40, seed=1)
    np.testing.assert_array_equal(a, b)


def test_reduced_node_set_runs():
    image, e, truth, _, band = sphere_phantom()
    refined, info = refine_gcn(image, prob=e, nodes="reduced", epochs=100, margin=3)
    full = int(np.prod([b - a for a, b in info["roi"]]))
    assert info["n_nodes"] < full
    assert ((refined[band] == 1) == truth[band]).mean() >= 0.8


def test_large_node_set_switches_to_band_then_slabs():
    """A ROI over ``max_nodes`` uses the dilated uncertain band, cut into slabs of whole planes
    that hold every band node once; the slab GCNs still fix the error band."""
    image, e, truth, pred, band = sphere_phantom()
    with pytest.warns(UserWarning, match="max_nodes = 1500"):
        refined, info = refine_gcn(image, prob=e, epochs=100, max_nodes=1500)
    roi = tuple(slice(a, b) for a, b in info["roi"])
    assert info["node_set"] == "band" and info["n_graphs"] >= 2
    assert info["n_nodes"] < band[roi].size
    assert ((refined[band] == 1) == truth[band]).mean() >= 0.8
    assert (refined[~band] == pred[~band]).all()  # confident voxels keep the prediction

    inp = _prepare(image, e, binary_entropy(e), pred, tau=0.8, margin=3, spacing=None, k=16, seed=0,
                   nodes="band", sigmas=None)
    parts = _slabs(inp, 1500)
    assert len(parts) >= 2 and all(int(p.mask.sum()) <= 1500 for p in parts)
    assert sum(int(p.mask.sum()) for p in parts) == int(inp.mask.sum())
    axis = int(np.argmax(inp.mask.shape))
    starts = [p.roi[axis].start for p in parts]
    stops = [p.roi[axis].stop for p in parts]
    assert starts[0] == inp.roi[axis].start and stops[-1] == inp.roi[axis].stop and starts[1:] == stops[:-1]


def test_node_set_and_max_nodes_are_checked():
    image, e, _, _, _ = sphere_phantom()
    with pytest.raises(InputError, match="`nodes` must be one of roi, reduced, band"):
        refine_gcn(image, prob=e, nodes="all")
    with pytest.raises(InputError, match="max_nodes"):
        refine_gcn(image, prob=e, max_nodes=0)


def test_single_slice_volume_works():
    image, e, _, pred, _ = sphere_phantom()
    k = 14
    refined, info = refine_gcn(image[:, :, k:k + 1], prob=e[:, :, k:k + 1], epochs=60)
    assert refined.shape == image[:, :, k:k + 1].shape and info["reason"] is None
    g = build_graph(image[:, :, k:k + 1], e[:, :, k:k + 1], binary_entropy(e[:, :, k:k + 1]),
                    pred[:, :, k:k + 1], k=0)
    assert g.roi_shape[2] == 1
    ni, nj = g.roi_shape[:2]
    assert g.n_edges == (ni - 1) * nj + ni * (nj - 1)  # in-plane face neighbours only


# --------------------------------------------------------------------------- bad and degenerate input


def test_empty_prediction_warns_and_returns_it():
    image = np.random.default_rng(0).normal(size=(10, 10, 10)).astype(np.float32)
    prob = np.full(image.shape, 0.1, np.float32)
    with pytest.warns(UserWarning, match="empty prediction"):
        refined, info = refine_gcn(image, prob=prob)
    assert refined.dtype == np.uint8 and not refined.any()
    assert "empty prediction" in info["reason"] and info["n_nodes"] == 0
    with pytest.raises(InputError, match="prediction is empty"):
        build_graph(image, prob, binary_entropy(prob), prob > 0.5)
    with pytest.raises(InputError, match="`epochs` must be"):  # options are checked all the same
        refine_gcn(image, prob=prob, epochs=0)


def test_prediction_filling_the_volume_is_returned_with_a_warning():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(8, 9, 10)).astype(np.float32)
    prob = np.full(image.shape, 0.95, np.float32)
    prob[3:5, 3:5, 3:5] = 0.6  # uncertain, but no background anywhere to learn from
    with pytest.warns(UserWarning, match="foreground only"):
        refined, info = refine_gcn(image, prob=prob)
    assert refined.all() and "foreground only" in info["reason"]
    assert info["roi"] == [(0, 8), (0, 9), (0, 10)] and info["n_uncertain"] == 8


def test_no_uncertain_node_returns_prediction_without_warning():
    image, e, _, pred, _ = sphere_phantom(shape=(20, 20, 20), radius=5.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        refined, info = refine_gcn(image, prob=e, tau=1.0)
    np.testing.assert_array_equal(refined, pred)
    assert "no uncertain node" in info["reason"] and info["seconds_train"] == 0.0


@pytest.mark.parametrize("tau", [0, -0.1, 1.5, math.nan, True, "0.8"])
def test_tau_outside_unit_interval(tau):
    image, e, *_ = sphere_phantom(shape=(16, 16, 16), radius=4.0)
    with pytest.raises(InputError, match=r"`tau` must be a number in \(0, 1\]"):
        refine_gcn(image, prob=e, tau=tau)


def test_samples_with_other_spatial_shape():
    image = np.zeros((10, 12, 8), np.float32)
    with pytest.raises(InputError, match=r"\(4, 10, 12, 9\).*\(10, 12, 8\)"):
        refine_gcn(image, np.zeros((4, 10, 12, 9), np.float32))
    with pytest.raises(InputError, match=r"`samples` \(shape \(10, 12, 8\)\)"):
        refine_gcn(image, np.zeros((10, 12, 8), np.float32))


def test_other_bad_inputs():
    image, e, *_ = sphere_phantom(shape=(16, 16, 16), radius=4.0)
    with pytest.raises(InputError, match="`image` must be a 3D"):
        refine_gcn(image[0], prob=e[0])
    with pytest.raises(InputError, match="exactly one of samples"):
        refine_gcn(image)
    with pytest.raises(InputError, match="exactly one of samples"):
        refine_gcn(image, np.stack([e]), prob=e)
    with pytest.raises(InputError, match=r"`prob` \(shape \(16, 16, 15\)\) must have the same shape"):
        refine_gcn(image, prob=e[:, :, :15])
    with pytest.raises(InputError, match=r"`prob` must be a probability in \[0, 1\]"):
        refine_gcn(image, prob=e * 2)
    with pytest.raises(InputError, match="entropy is computed from samples"):
        refine_gcn(image, np.stack([e]), entropy=e)
    nan_image = image.copy()
    nan_image[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="`image` must be finite"):
        refine_gcn(nan_image, prob=e)
    with pytest.raises(InputError, match="`spacing` must be 3 positive numbers"):
        refine_gcn(image, prob=e, spacing=(1, 0, 1))
    with pytest.raises(InputError, match="`margin` must be a non-negative int"):
        refine_gcn(image, prob=e, margin=-1)
    with pytest.raises(InputError, match="`k` must be an integer >= 0"):
        refine_gcn(image, prob=e, k=-2)
    with pytest.raises(InputError, match="`epochs` must be an integer >= 1"):
        refine_gcn(image, prob=e, epochs=0)
    with pytest.raises(InputError, match="`backend` must be"):
        refine_gcn(image, prob=e, backend="cuda")
    with pytest.raises(InputError, match="`sigmas` must be None or 3 positive"):
        refine_gcn(image, prob=e, sigmas=(1, 1))


def test_train_gcn_without_labelled_nodes():
    image, e, h, pred = tiny_case()
    g = build_graph(image, e, np.ones_like(h), pred, margin=1, k=2)  # H = 1 > τ everywhere
    assert g.n_labelled == 0
    with pytest.raises(InputError, match="no labelled node"):
        train_gcn(g, epochs=2)


# --------------------------------------------------------------------------- real data


def test_refine_hippocampus_case_end_to_end(hippo):
    from segrefine import io
    from segrefine.uncertainty import Predictor

    vol = io.load(hippo / "imagesTr" / "hippocampus_004.nii.gz")
    pred = Predictor("mcdropout", passes=4)(vol.array, keep_samples=True)
    assert pred.samples.shape == (4, *vol.array.shape)
    refined, info = refine_gcn(vol.array, pred.samples, spacing=vol.spacing)
    assert refined.shape == vol.array.shape and refined.dtype == np.uint8
    assert set(np.unique(refined)) <= {0, 1}
    assert info["reason"] is None
    for key in ("seconds_graph", "seconds_train", "seconds_total"):
        assert math.isfinite(info[key]) and info[key] > 0
    assert info["n_nodes"] > 0 and info["n_edges"] > info["n_nodes"]
    assert 0 < info["n_uncertain"] < info["n_nodes"]
    e, h = mc_statistics(pred.samples)
    confident = h <= 0.8
    np.testing.assert_array_equal(refined[confident], (e > 0.5)[confident])
