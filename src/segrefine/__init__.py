"""segrefine: uncertainty-guided refinement of 3D medical image segmentations."""

__version__ = "0.1.0"
