"""``KiTSLocalizationEnsemble``: [Zhang 2019]'s localization cascade with a label-assignment ensemble.

One ``boxunet_train DATASET 3d_fullres FOLD -tr KiTSLocalizationEnsemble`` trains four binary networks, each
a plans U-Net with a heatmap regression branch (boxunet.nets.regression) trained with Dice + CE and WMSE:

==================  =============  ==========================================  ===========================
stage               grid           foreground                                  heatmaps (WMSE)
==================  =============  ==========================================  ===========================
localization        coarse (x1/4)  every kidney label (kidney, tumor, cyst)    5 landmarks, sigma 3
kidney_and_tumor    roi            every kidney label                          boundary, sigma 3
kidney              roi            kidney                                      boundary, sigma 3
tumor               tumor          tumor                                       boundary, sigma 2
==================  =============  ==========================================  ===========================

(grids: boxunet.kits.grids; each stage's patch and network are planned for its grid). The stages train
in ``fold_X/<stage>/`` and resume there; the fold's ``checkpoint_final.pth`` holds all four networks and
their configurations, so ``boxunet_predict`` runs the whole pipeline per case:

1. the localization network on the case downsampled x4: its segmentation box, or its landmark box when
   their transverse widths disagree (boxunet.kits.localization), mapped back and expanded by 24/50/50 mm;
2. K_T, K and T on that region of interest (each averaged over the folds: same-type networks first);
3. T's mask keeps only 2D components larger than 38.9 mm2 per slice; the labels are assigned by
   boxunet.kits.label_assignment and padded back to the whole image.

The prediction report gives per case where the region came from and its box.
"""
import numpy as np
import torch

from boxunet.cropping import mask_bbox
from boxunet.kits.components import remove_small_slice_components
from boxunet.kits.grids import coarse_shape
from boxunet.kits.label_assignment import assign_labels
from boxunet.kits.localization import choose_box, landmark_box, scale_box
from boxunet.kits.stages import FOREGROUND_THRESHOLD, KiTSPipeline, PredictionRun, Stage, stage_mask, stage_prediction
from boxunet.preprocessing.resampling import resample_channels

LOCALIZATION, KIDNEY_AND_TUMOR, KIDNEY, TUMOR = (
    Stage("localization", "coarse", "kidney_and_tumor", heatmaps="landmarks", sigma=3.0),
    Stage("kidney_and_tumor", "roi", "kidney_and_tumor", heatmaps="boundary", sigma=3.0),
    Stage("kidney", "roi", "kidney", heatmaps="boundary", sigma=3.0),
    Stage("tumor", "tumor", "tumor", heatmaps="boundary", sigma=2.0))


class KiTSLocalizationEnsemble(KiTSPipeline):
    """[Zhang 2019]'s pipeline (see the module docstring)."""

    stages = (LOCALIZATION, KIDNEY_AND_TUMOR, KIDNEY, TUMOR)

    @classmethod
    def predict_case(cls, networks, data: torch.Tensor, spacing, run: PredictionRun) -> tuple[np.ndarray, dict]:
        shape = tuple(data.shape[1:])
        coarse = torch.from_numpy(resample_channels(data.numpy(), coarse_shape(shape), order=1))
        located, heatmaps = stage_prediction(networks, LOCALIZATION, coarse, run)
        located = located > FOREGROUND_THRESHOLD
        box, source = choose_box(mask_bbox(located) if located.any() else None, landmark_box(heatmaps))
        roi = scale_box(box, coarse.shape[1:], shape, spacing) if box else [[0, s] for s in shape]
        region = tuple(slice(lo, hi) for lo, hi in roi)
        crop = data[(slice(None), *region)].contiguous()
        kidney_and_tumor, kidney, tumor = (stage_mask(networks, stage, crop, run)
                                           for stage in (KIDNEY_AND_TUMOR, KIDNEY, TUMOR))
        labels = networks[0].kits_labels
        result = np.zeros(shape, dtype=np.uint8)
        result[region] = assign_labels(kidney_and_tumor, kidney, remove_small_slice_components(tumor, spacing[1:]),
                                       labels["kidney"][0], labels["tumor"][0])
        return result, {"roi_source": source, "roi": roi}
