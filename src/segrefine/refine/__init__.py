"""Refinement of a segmentation from the network's output and the user's input.

Slice refiners (2D, interactive) — functions of ``(H, W)`` arrays that return
a boolean mask and leave their inputs untouched:

- :mod:`segrefine.refine.levelset`: I-DRLSE, the interaction-based level set of
  UGIR (Wang et al. 2020), and its plain NumPy reference; also the input
  validation helpers the slice refiners share;
- :mod:`segrefine.refine.graphcut`: max-flow cuts (PyMaxflow) of the CNN
  probability with the scribbles as hard seeds, or of intensity models learnt
  from the scribbles alone;
- :mod:`segrefine.refine.rnet`: the R-Net baseline (DeepIGeoS-style network).

Volume refiners (3D):

- :mod:`segrefine.refine.volume`: each scribbled slice of a volume refined;
- :mod:`segrefine.refine.gcn`: uncertainty-based GCN refinement
  (Soberanis-Mukul et al. 2020);
- :mod:`segrefine.refine.crf`: the dense CRF baseline.

Scribbles are ``uint8`` label slices: 0 = none, 1 = foreground,
2 = background. Submodules are imported on demand (``from
segrefine.refine.levelset import idrlse``), so importing this package loads
neither numba kernels, PyMaxflow nor torch.
"""
