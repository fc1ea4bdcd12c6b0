"""boxunet: self-configuring 3D medical image segmentation from voxel masks or bounding boxes.

The package's layers and how data flows through them: documentation/architecture.md. Papers are cited by
key, e.g. ``[Yang 2020] Eq. 5``; documentation/references.md lists them. From Python, ``boxunet.Predictor`` and
``boxunet.pseudo_masks`` (boxunet.api, loaded when first used; documentation/python_api.md).
"""
from boxunet.version import __version__

__all__ = ["Predictor", "pseudo_masks", "__version__"]


def __getattr__(name: str):
    """The Python API, imported on first use so that ``import boxunet`` stays light."""
    if name in ("Predictor", "pseudo_masks"):
        from boxunet import api
        return getattr(api, name)
    raise AttributeError(f"module 'boxunet' has no attribute {name!r}")
