"""boxunet: self-configuring 3D medical image segmentation from voxel masks or bounding boxes.

The package's layers and how data flows through them: documentation/architecture.md. Papers are cited by
key, e.g. ``[Yang 2020] Eq. 5``; documentation/references.md lists them.
"""
__version__ = "0.1.0"
