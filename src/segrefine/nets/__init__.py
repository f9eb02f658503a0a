"""Networks: the dropout U-Net backbone, MG-Net, and checkpoints."""

from segrefine.nets.segnet import MGNet, SegNet, UNet, build_network

__all__ = ["MGNet", "SegNet", "UNet", "build_network"]
