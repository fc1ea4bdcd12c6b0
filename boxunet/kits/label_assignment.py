"""The label-assignment ensemble of seed 001: three binary decisions per voxel become a KiTS label map.

``K_T`` segments kidney and tumor as one class, ``K`` the kidney, ``T`` the tumor. Networks of the same type
are averaged first (``average_foreground``); then, per voxel:

====  ===  ===  =========================================================
K_T   K    T    label
====  ===  ===  =========================================================
0     any  any  background (K_T's extent constrains everything)
1     1    0    kidney
1     any  1    tumor (tumor wins a tie: a missed tumor voxel costs more)
1     0    0    ``unclaimed``: kidney by default
====  ===  ===  =========================================================

The paper does not state the last row. Its default, kidney, keeps the K_T label (K_T's foreground is
"kidney") where neither K nor T assigns one, and K_T's extent is what the paper credits for removing false
positives; ``unclaimed=0`` instead asks K to confirm every kidney voxel.
"""
import numpy as np

KIDNEY, TUMOR = 1, 2


def average_foreground(probabilities: list[np.ndarray], threshold: float = 0.5) -> np.ndarray:
    """Boolean foreground of the mean of same-type networks' foreground probabilities (each ``(*shape)``)."""
    if not probabilities:
        raise ValueError("average_foreground needs at least one probability map")
    return np.mean(np.stack([np.asarray(p, dtype=np.float32) for p in probabilities]), axis=0) > threshold


def assign_labels(kidney_and_tumor: np.ndarray, kidney: np.ndarray, tumor: np.ndarray,
                  kidney_label: int = KIDNEY, tumor_label: int = TUMOR, unclaimed: int = KIDNEY) -> np.ndarray:
    """uint8 label map from the K_T, K and T foreground masks (same shape) by the table of this module;
    ``unclaimed`` is the label of K_T voxels that neither K nor T claims."""
    kidney_and_tumor, kidney, tumor = (np.asarray(m, dtype=bool) for m in (kidney_and_tumor, kidney, tumor))
    if not kidney_and_tumor.shape == kidney.shape == tumor.shape:
        raise ValueError(f"K_T, K and T masks differ in shape: {kidney_and_tumor.shape}, {kidney.shape}, "
                         f"{tumor.shape}")
    labels = np.zeros(kidney_and_tumor.shape, dtype=np.uint8)
    labels[kidney_and_tumor] = unclaimed
    labels[kidney_and_tumor & kidney] = kidney_label
    labels[kidney_and_tumor & tumor] = tumor_label
    return labels
