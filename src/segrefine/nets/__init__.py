"""Networks: the dropout U-Net backbone, MG-Net, and checkpoints."""

from segrefine.nets.segnet import GroupedUNet, build_mgnet, build_network, build_unet

__all__ = ["GroupedUNet", "build_mgnet", "build_network", "build_unet"]
