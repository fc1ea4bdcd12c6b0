"""The label-assignment ensemble of [Zhang 2019]: three binary decisions per voxel become a KiTS label map.

``K_T`` segments kidney and tumor as one class, ``K`` the kidney, ``T`` the tumor (networks of the same type,
e.g. the folds, are averaged before). Labels come from K and T and are kept only inside K_T, whose extent
removes most of their false positives:

====  ===  ===  =========================================================
K_T   K    T    label
====  ===  ===  =========================================================
0     any  any  background
1     1    0    kidney
1     any  1    tumor (tumor wins a tie: a missed tumor voxel costs more)
1     0    0    background (neither K nor T claims the voxel)
====  ===  ===  =========================================================
"""
import numpy as np

KIDNEY, TUMOR = 1, 2


def assign_labels(kidney_and_tumor: np.ndarray, kidney: np.ndarray, tumor: np.ndarray,
                  kidney_label: int = KIDNEY, tumor_label: int = TUMOR) -> np.ndarray:
    """uint8 label map from the K_T, K and T foreground masks (same shape) by the table of this module."""
    kidney_and_tumor, kidney, tumor = (np.asarray(m, dtype=bool) for m in (kidney_and_tumor, kidney, tumor))
    if not kidney_and_tumor.shape == kidney.shape == tumor.shape:
        raise ValueError(f"K_T, K and T masks differ in shape: {kidney_and_tumor.shape}, {kidney.shape}, "
                         f"{tumor.shape}")
    labels = np.zeros(kidney_and_tumor.shape, dtype=np.uint8)
    labels[kidney_and_tumor & kidney] = kidney_label
    labels[kidney_and_tumor & tumor] = tumor_label
    return labels
