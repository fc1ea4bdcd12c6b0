"""Predict one demo test image in memory with the demo's box-trained model, and check it against the label map
``boxunet_predict`` wrote for the same image. Trains nothing: run ``bash scripts/demo.sh`` first, then, from the
repository root,

    boxunet_raw=boxunet_data/raw boxunet_preprocessed=boxunet_data/preprocessed \
        boxunet_results=boxunet_data/results python documentation/examples/predict_in_memory.py
"""
import numpy as np
import SimpleITK as sitk

import boxunet
from boxunet.paths import raw_root, results_root

raw = raw_root() / "Dataset900_KiTSDemo"
image_file = sorted((raw / "imagesTs").glob("*_0000.nii.gz"))[0]
case_id = image_file.name[:-len("_0000.nii.gz")]

# the demo's model: BoxThreeStage, 3d_fullres, fold 0 (loaded once; predict as often as needed)
predictor = boxunet.Predictor.from_dataset(900, "3d_fullres", folds=[0])
image = sitk.ReadImage(str(image_file))  # any SimpleITK image: read from a file here, built in memory elsewhere
labels, probabilities = predictor.predict(image, return_probabilities=True)

predicted = sitk.GetArrayFromImage(labels)
reference = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsTs" / f"{case_id}.nii.gz")))
tumor_dice = 2 * np.sum((predicted == 2) & (reference == 2)) / max(np.sum(predicted == 2) + np.sum(reference == 2), 1)
print(f"{case_id}: label map {labels.GetSize()} at spacing {labels.GetSpacing()}, probabilities "
      f"{probabilities.shape} {probabilities.dtype}; tumor Dice {tumor_dice:.3f}")

written = results_root() / "Dataset900_KiTSDemo" / "demo_predictions_imagesTs" / f"{case_id}.nii.gz"
if written.is_file():
    same = np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(written))), predicted)
    print(f"identical to {written} (boxunet_predict): {same}")
