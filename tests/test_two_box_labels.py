"""Two adjacent labels given as boxes (like MSD Hippocampus' anterior and posterior): overlapping boxes of
different labels, a label present in some cases only, a box touching the image border and images stored as
uint8 in some cases and float in others go through stage 1, the box trainer and prediction."""
import json

import numpy as np
import pytest
from conftest import plan_tiny_3d_fullres, write_tiny_dataset

from boxunet.boxes.stage1 import PseudoLabelRequest, generate_pseudo_labels
from boxunet.cli.predict import main as predict_main
from boxunet.io.boxes import read_boxes
from boxunet.io.images import read_image, write_image
from boxunet.training.box.options import BoxThreeStageOptions
from boxunet.training.box.three_stage import BoxThreeStage
from boxunet.training.run import TrainingRequest, run_training
from dataset_conversion.labels_to_boxes import labels_to_boxes


def _two_box_label_dataset(raw_root):
    folder = write_tiny_dataset(raw_root, num_cases=6, with_boxes=False, shape=(16, 48, 40))
    labels = folder / "labelsTr"
    # case 5 has no kidney at all: the label is boxed in some cases and missing in others
    kidney_free, geometry = read_image(labels / "case_005.nii.gz")
    write_image(np.where(kidney_free == 1, 0, kidney_free).astype(np.uint8), geometry, labels / "case_005.nii.gz")
    # case 4's tumor reaches the image border, so its box touches it
    touching, geometry = read_image(labels / "case_004.nii.gz")
    touching[:, 20:24, -3:] = 2
    write_image(touching, geometry, labels / "case_004.nii.gz")
    # case 1's image is stored as uint8, the others as int16
    image, geometry = read_image(folder / "imagesTr" / "case_001_0000.nii.gz")
    write_image(np.clip(image, 0, 255).astype(np.uint8), geometry, folder / "imagesTr" / "case_001_0000.nii.gz")
    labels_to_boxes(folder, [1, 2], margin=0)
    return folder


@pytest.mark.slow
def test_two_adjacent_box_labels_end_to_end(roots, tmp_path):
    folder = _two_box_label_dataset(roots["raw"])
    assert json.loads((folder / "dataset.json").read_text())["box_labels"] == [1, 2]
    boxes = {case: read_boxes(folder / "boxesTr" / f"case_00{case}.json") for case in range(6)}
    assert not any(box.label == 1 for box in boxes[5]) and any(box.label == 2 for box in boxes[5])
    assert any(box.max[2] == 40 for box in boxes[4] if box.label == 2), "a box touching the border"
    kidney = next(b for b in boxes[0] if b.label == 1)
    tumor = next(b for b in boxes[0] if b.label == 2)
    assert all(lo < hi_other and lo_other < hi for lo, hi, lo_other, hi_other in
               zip(kidney.min, kidney.max, tumor.min, tumor.max)), "the two labels' boxes overlap"
    plan_tiny_3d_fullres()
    report = generate_pseudo_labels(PseudoLabelRequest("1", progress=False))
    for label in ("1", "2"):
        assert report["mean"][label]["dice_pseudo_mask"] > report["mean"][label]["dice_boxes"]
    assert report["mean"]["1"]["cases_with_reference"] == 5 and report["mean"]["2"]["cases_with_reference"] == 6
    options = BoxThreeStageOptions(epochs=1, iterations_per_epoch=2, validation_iterations=1, augmentation_workers=0,
                                   progress_bar=False, group_networks=0)
    output = run_training(TrainingRequest("1", "3d_fullres", "0", BoxThreeStage, device="cpu", options=options))
    box_report = json.loads((output / "box_report.json").read_text())
    assert set(box_report["mean"]) == {"1", "2"} and box_report["resolution"] == "raw"
    assert set(json.loads((output / "validation" / "summary.json").read_text())["mean"]) == {"0", "1", "2"}
    predict_main(["-i", str(folder / "imagesTr"), "-o", str(tmp_path / "out"), "-d", "1", "-c", "3d_fullres",
                  "-f", "0", "--quiet", "-np", "0", "--disable-tta"])
    for case in range(6):
        prediction, geometry = read_image(tmp_path / "out" / f"case_00{case}.nii.gz")
        assert geometry == read_image(folder / "imagesTr" / f"case_00{case}_0000.nii.gz")[1]
        assert set(np.unique(prediction).tolist()) <= {0, 1, 2}
