"""boxunet: self-configuring 3D medical image segmentation from voxel masks or bounding boxes."""
__version__ = "0.1.0"
