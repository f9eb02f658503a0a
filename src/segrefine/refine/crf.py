"""Fully connected (dense) CRF refinement of a 3D foreground probability: the GCN paper's baseline.

Krähenbühl & Koltun's dense CRF with Gaussian edge potentials, run by
``pydensecrf`` (installed from the ``pydensecrf2`` package) on a whole 3D
volume: soft unaries from the (MC) expectation, a smoothness kernel on voxel
positions and an appearance (bilateral) kernel on positions and intensity,
both in millimetres so that anisotropic volumes are handled, then a few
mean-field iterations.

Arrays are volumes ``(I, J, K)`` in voxel order; ``spacing`` is one number per
axis in mm in the same order (``None`` = 1 mm).

References
----------
P. Krähenbühl, V. Koltun. Efficient inference in fully connected CRFs with
Gaussian edge potentials. NIPS 2011.
"""

from __future__ import annotations

import numpy as np

from segrefine.validate import as_number, as_probability, as_spacing, as_volume

#: Defaults chosen on the hippocampus ``val`` split by ``segrefine bench gcn``
#: (48 settings, docs/tuning.md; the same choice for the full- and low-data
#: U-Nets). Spatial scales in mm, intensity scale in standard deviations of the
#: z-scored volume.
DEFAULT_SXYZ = 2.0
DEFAULT_SRGB = 0.25
DEFAULT_GAUSS_SXYZ = 1.0
DEFAULT_W_GAUSS = 3.0
DEFAULT_W_BILATERAL = 5.0
DEFAULT_CLIP = 1e-5


def _check_inputs(image, expectation, spacing, iterations, clip):
    image = as_volume(image, "image")
    e = as_probability(expectation, "expectation", ndim=3, shape=image.shape, dtype=None)
    sp = np.asarray(as_spacing(spacing, 3))
    as_number(iterations, "iterations", low=1, integer=True)
    clip = as_number(clip, "clip", low=0.0, high=0.5, low_open=True, high_open=True)
    return image, e, sp, clip


def dense_crf(image: np.ndarray, expectation: np.ndarray, *, spacing=None, sxyz: float = DEFAULT_SXYZ,
              srgb: float = DEFAULT_SRGB, gauss_sxyz: float = DEFAULT_GAUSS_SXYZ,
              w_gauss: float = DEFAULT_W_GAUSS, w_bilateral: float = DEFAULT_W_BILATERAL,
              iterations: int = 5, clip: float = DEFAULT_CLIP) -> np.ndarray:
    """Binary dense-CRF segmentation of a 3D volume from a foreground probability.

    Parameters
    ----------
    image : (I, J, K) ndarray
        Intensities ``V``; z-scored over the volume inside.
    expectation : (I, J, K) ndarray
        Foreground probability ``E`` in [0, 1] (e.g. the MC-dropout expectation).
    spacing : 3 floats or None
        Voxel size in mm along I, J, K (None = 1 mm).
    sxyz : float
        Spatial scale ``θ_α`` of the bilateral (appearance) kernel, mm.
    srgb : float
        Intensity scale ``θ_β`` of the bilateral kernel, in standard deviations
        of the z-scored intensity.
    gauss_sxyz : float
        Spatial scale ``θ_γ`` of the Gaussian (smoothness) kernel, mm.
    w_gauss, w_bilateral : float
        Weights ``w_2`` and ``w_1`` of the two kernels (Potts compatibility);
        0 switches a kernel off.
    iterations : int
        Mean-field iterations.
    clip : float
        Probabilities are clipped to [clip, 1 - clip] before the logarithm.

    Returns
    -------
    (I, J, K) uint8
        The labels (0/1) that maximise the mean-field marginals ``Q``.

    Notes
    -----
    The energy, for labels ``l`` and voxels ``a, b`` at positions ``x`` (mm)::

        E(l) = Σ_a ψ_u(l_a) + Σ_{a<b} [l_a ≠ l_b] k(a, b)
        ψ_u(1) = -log E_a,   ψ_u(0) = -log(1 - E_a)
        k(a, b) = w_1 exp(-|x_a - x_b|² / 2θ_α² - |V'_a - V'_b|² / 2θ_β²)
                + w_2 exp(-|x_a - x_b|² / 2θ_γ²)

    ``pydensecrf``'s ``create_pairwise_*`` helpers scale voxel indices; the
    spatial scales given to them are ``θ / spacing`` per axis, which makes
    the kernels isotropic in mm. Kernels are diagonal with symmetric
    normalisation, as in the authors' CRF baseline.

    The defaults were chosen on the hippocampus ``val`` split (1 mm MRI
    crops): a smoothness kernel of one voxel, an appearance kernel of 2 mm and
    a quarter of a standard deviation of intensity. Tune them on a validation
    split for other data.
    """
    image, e, sp, clip = _check_inputs(image, expectation, spacing, iterations, clip)
    sxyz, srgb, gauss_sxyz = (as_number(v, n, low=0.0, low_open=True) for n, v in
                              (("sxyz", sxyz), ("srgb", srgb), ("gauss_sxyz", gauss_sxyz)))
    w_gauss = as_number(w_gauss, "w_gauss", low=0.0)
    w_bilateral = as_number(w_bilateral, "w_bilateral", low=0.0)

    import pydensecrf.densecrf as dcrf  # lazy: a compiled extension only this baseline needs
    from pydensecrf.utils import create_pairwise_bilateral, create_pairwise_gaussian

    shape = image.shape
    n = int(np.prod(shape))
    p = np.clip(e.astype(np.float64).ravel(), clip, 1 - clip)
    unary = np.ascontiguousarray(np.stack([-np.log(1 - p), -np.log(p)]), dtype=np.float32)

    v = image.astype(np.float64)
    sd = float(v.std())
    v = ((v - v.mean()) / (sd if sd > 1e-12 else 1.0)).astype(np.float32)

    crf = dcrf.DenseCRF(n, 2)
    crf.setUnaryEnergy(unary)
    if w_gauss > 0:
        feats = create_pairwise_gaussian(sdims=tuple(gauss_sxyz / sp), shape=shape)
        crf.addPairwiseEnergy(np.ascontiguousarray(feats, dtype=np.float32), compat=w_gauss,
                              kernel=dcrf.DIAG_KERNEL, normalization=dcrf.NORMALIZE_SYMMETRIC)
    if w_bilateral > 0:
        feats = create_pairwise_bilateral(sdims=tuple(sxyz / sp), schan=(srgb,), img=v, chdim=-1)
        crf.addPairwiseEnergy(np.ascontiguousarray(feats, dtype=np.float32), compat=w_bilateral,
                              kernel=dcrf.DIAG_KERNEL, normalization=dcrf.NORMALIZE_SYMMETRIC)
    q = np.asarray(crf.inference(int(iterations)), dtype=np.float32).reshape(2, *shape)
    return (q[1] > q[0]).astype(np.uint8)
