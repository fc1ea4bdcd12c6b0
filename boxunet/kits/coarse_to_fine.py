"""``KiTSCoarseToFine``: [KiTS19 coarse-to-fine]'s coarse-to-fine pipeline with kidney-count abnormality detection.

One ``boxunet_train DATASET 3d_fullres FOLD -tr KiTSCoarseToFine`` trains five binary networks (Dice + CE),
each planned on its grid (boxunet.kits.grids):

==========  ============  ===================  ===========================================================
stage       grid          foreground           notes
==========  ============  ===================  ===========================================================
coarse      coarse (x1/4) kidney and tumor     the coarse model C
correction  sagittal      kidney and tumor     the abnormal-correction model A: a (z, y) window, every x
fine        kidney        kidney and tumor     the fine model F: one crop per kidney
tumor       kidney_frame  tumor                3D; patch centres 1/3 random, 1/3 kidney, 1/3 tumor
tumor_2d    kidney_frame  tumor                2D, two channels (image, kidney mask); 1/2 tumor centres
==========  ============  ===================  ===========================================================

Prediction per case:

1. C on the case downsampled x4; its kidneys are counted (boxunet.kits.kidney_count: components of at least
   18.3 ml). A count other than 2 flags the case abnormal: A segments the sagittal window centred on C's
   mask, and its mask replaces C's.
2. F segments a window around each kidney of that mask; the union is the kidney (S_F).
3. The tumor network segments S_F's box with a frame; lesions outside S_F are kept only if they touch it.
   When it finds less than ``MIN_TUMOR_ML``, the 2D network (image + S_F) segments the same region instead.
4. Labels: kidney where S_F, tumor where tumor.

The prediction report gives per case the coarse kidney count, the abnormal flag, the kidney volumes, the
final kidney count and which tumor network decided.
"""
import numpy as np
import torch

from boxunet.kits.components import keep_connected_to
from boxunet.kits.grids import (KIDNEY_FRAME_MM, coarse_shape, expanded_box, kidney_window, resampled_spacing,
                                sagittal_window)
from boxunet.kits.kidney_count import kidney_check, kidney_components
from boxunet.kits.stages import FOREGROUND_THRESHOLD, KiTSPipeline, PredictionRun, Stage, stage_mask, stage_prediction
from boxunet.preprocessing.resampling import resample_channels

COARSE, CORRECTION, FINE, TUMOR, TUMOR_2D = (
    Stage("coarse", "coarse", "kidney_and_tumor"),
    Stage("correction", "sagittal", "kidney_and_tumor"),
    Stage("fine", "kidney", "kidney_and_tumor"),
    Stage("tumor", "kidney_frame", "tumor", centre_classes=("kidney", "tumor")),
    Stage("tumor_2d", "kidney_frame", "tumor", centre_classes=("tumor",), kidney_mask_input=True, conv_dim=2))
MIN_TUMOR_ML = 0.5  # below this the 3D tumor network "finds no tumor" (a 1 cm lesion is about 0.52 ml)


def _slices(box: list[list[int]]) -> tuple[slice, ...]:
    return tuple(slice(lo, hi) for lo, hi in box)


class KiTSCoarseToFine(KiTSPipeline):
    """[KiTS19 coarse-to-fine]'s pipeline (see the module docstring)."""

    stages = (COARSE, CORRECTION, FINE, TUMOR, TUMOR_2D)

    @classmethod
    def kidney_mask(cls, networks, data: torch.Tensor, spacing, run: PredictionRun) -> tuple[np.ndarray, dict]:
        """The mask M that guides the fine model (C's, or A's for an abnormal case) and the kidney check."""
        shape = tuple(data.shape[1:])
        coarse = resample_channels(data.numpy(), coarse_shape(shape), order=1)
        probability = stage_prediction(networks, COARSE, torch.from_numpy(coarse), run)[0]
        coarse_spacing = resampled_spacing(spacing, shape, probability.shape)
        check = kidney_check(probability > FOREGROUND_THRESHOLD, coarse_spacing)
        mask = resample_channels(probability[None], shape, order=1)[0] > FOREGROUND_THRESHOLD
        details = {"coarse_kidney_count": check["kidney_count"], "abnormal": check["abnormal"],
                   "coarse_kidney_volumes_ml": check["kidney_volumes_ml"]}
        if check["abnormal"]:
            region = _slices(sagittal_window(mask, spacing))
            mask = np.zeros(shape, dtype=bool)
            mask[region] = stage_mask(networks, CORRECTION, data[(slice(None), *region)].contiguous(), run)
        return mask, details

    @classmethod
    def predict_case(cls, networks, data: torch.Tensor, spacing, run: PredictionRun) -> tuple[np.ndarray, dict]:
        shape = tuple(data.shape[1:])
        guide, details = cls.kidney_mask(networks, data, spacing, run)
        kidney = np.zeros(shape, dtype=bool)
        for component in kidney_components(guide, spacing):
            region = _slices(kidney_window(component, spacing))
            kidney[region] |= stage_mask(networks, FINE, data[(slice(None), *region)].contiguous(), run)
        details.update(kidney_count=kidney_check(kidney, spacing)["kidney_count"], tumor_network=None)
        labels = networks[0].kits_labels
        result = np.where(kidney, labels["kidney"][0], 0).astype(np.uint8)
        if not kidney.any():
            return result, details
        region = _slices(expanded_box(kidney, spacing, KIDNEY_FRAME_MM))
        crop, kidney_crop = data[(slice(None), *region)].contiguous(), kidney[region]
        tumor = keep_connected_to(stage_mask(networks, TUMOR, crop, run), kidney_crop)
        details["tumor_network"] = "3d"
        if tumor.sum() * float(np.prod(spacing)) / 1000.0 < MIN_TUMOR_ML:
            two_channels = torch.cat([crop, torch.from_numpy(kidney_crop[None].astype(np.float32))])
            tumor = keep_connected_to(stage_mask(networks, TUMOR_2D, two_channels, run), kidney_crop)
            details["tumor_network"] = "2d"
        result[region][tumor] = labels["tumor"][0]
        return result, details
