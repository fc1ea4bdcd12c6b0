"""The Python API (boxunet.Predictor, boxunet.pseudo_masks): images held in memory give exactly the label maps,
probabilities and stage-1 masks the command-line tools write; bad input is refused with a clear error."""
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import ODD_GEOMETRY, odd_input_image, random_unet_model, write_tiny_dataset

import boxunet
from boxunet.cli.ensemble import main as ensemble_main
from boxunet.cli.predict import main as predict_main
from boxunet.cli.pseudo_labels import main as pseudo_labels_main
from boxunet.errors import BoxunetError
from boxunet.io.boxes import read_boxes
from boxunet.io.images import read_image


@pytest.fixture
def random_model(roots):
    return random_unet_model(roots)


def test_predict_in_memory_gives_the_cli_label_map_and_probabilities_voxel_for_voxel(random_model, tmp_path):
    files = [odd_input_image(tmp_path / "in", f"new_{seed}", seed) for seed in (7, 8)]
    predict_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-d", "1", "-c", "3d_fullres",
                  "--quiet", "-np", "0", "--save-probabilities", "--precision", "fp32", "-device", "cpu"])
    predictor = boxunet.Predictor(random_model, device="cpu", precision="fp32")
    assert predictor.model.folds == ["0", "1"]
    for seed, file in zip((7, 8), files):
        with pytest.warns(UserWarning, match=r"oriented \[2, 1, -3\] .* unlike every training image"):
            labels, probabilities = predictor.predict(sitk.ReadImage(str(file)), return_probabilities=True)
        written, geometry = read_image(tmp_path / "out" / f"new_{seed}.nii.gz")
        assert ODD_GEOMETRY.mismatch(geometry) is None
        assert labels.GetSpacing() == pytest.approx(ODD_GEOMETRY.spacing[::-1])
        assert labels.GetOrigin() == pytest.approx(ODD_GEOMETRY.origin)
        assert labels.GetDirection() == pytest.approx(ODD_GEOMETRY.direction)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), written)
        assert len(np.unique(written)) > 1  # a label map worth comparing
        with np.load(tmp_path / "out" / f"new_{seed}.npz") as saved:
            np.testing.assert_array_equal(probabilities, saved["probabilities"])
        assert probabilities.dtype == np.float16 and probabilities.shape == (3,) + ODD_GEOMETRY.shape


@pytest.mark.filterwarnings("ignore:.*unlike every training image")
def test_predict_array_and_predict_many_match_predict(random_model, tmp_path):
    images = [sitk.ReadImage(str(odd_input_image(tmp_path / "in", f"new_{seed}", seed))) for seed in (7, 8, 9)]
    predictor = boxunet.Predictor.from_dataset(1, "3d_fullres", precision="fp32", mirroring=False)
    single = [sitk.GetArrayFromImage(predictor.predict(image)) for image in images]
    array = sitk.GetArrayFromImage(images[0])
    from_array = predictor.predict_array(array, ODD_GEOMETRY.spacing, ODD_GEOMETRY.origin, ODD_GEOMETRY.direction)
    np.testing.assert_array_equal(from_array, single[0])
    many = predictor.predict_many(images, workers=1)  # the next image is preprocessed in a background process
    for result, expected in zip(many, single):
        np.testing.assert_array_equal(sitk.GetArrayFromImage(result), expected)


@pytest.mark.filterwarnings("ignore:.*unlike every training image")
def test_an_ensemble_in_memory_averages_probabilities_as_boxunet_ensemble_does(random_model, tmp_path):
    other = random_model.parent / "FullySupervised__boxunetPlans__3d_fullres"
    shutil.copytree(random_model, other)
    for fold in (0, 1):  # other weights: another seed
        state = torch.load(other / f"fold_{fold}" / "checkpoint_final.pth", weights_only=True)
        torch.manual_seed(10 + fold)
        state["network_weights"] = {k: torch.randn_like(v) * 0.1 if v.is_floating_point() else v
                                    for k, v in state["network_weights"].items()}
        torch.save(state, other / f"fold_{fold}" / "checkpoint_final.pth")
    odd_input_image(tmp_path / "in", "new")
    for trainer in ("Trainer", "FullySupervised"):
        predict_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / trainer), "-d", "1", "-c", "3d_fullres", "-tr",
                      trainer, "--quiet", "-np", "0", "--save-probabilities", "--precision", "fp32", "--disable-tta"])
    ensemble_main(["-i", str(tmp_path / "Trainer"), str(tmp_path / "FullySupervised"), "-o", str(tmp_path / "both"),
                   "-np", "1"])
    predictor = boxunet.Predictor([random_model, other], precision="fp32", mirroring=False)
    labels = predictor.predict(sitk.ReadImage(str(tmp_path / "in" / "new_0000.nii.gz")))
    written, _ = read_image(tmp_path / "both" / "new.nii.gz")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), written)
    single, _ = read_image(tmp_path / "Trainer" / "new.nii.gz")
    assert not np.array_equal(single, written)  # the second member changed the result


@pytest.mark.filterwarnings("ignore:.*unlike every training image")
def test_bad_inputs_are_refused_with_a_clear_error(random_model, tmp_path):
    predictor = boxunet.Predictor(random_model, folds=[0], precision="fp32")
    image = sitk.ReadImage(str(odd_input_image(tmp_path / "in", "new")))
    with pytest.raises(BoxunetError, match="2 channel.*expects 1 channel"):
        predictor.predict([image, image])
    with pytest.raises(BoxunetError, match="spacing .* positive"):
        predictor.predict_array(np.zeros((11, 37, 29)), (1.0, 0.0, 1.0))
    with pytest.raises(BoxunetError, match=r"array of shape \[2, 2\]"):
        predictor.predict_array(np.zeros((2, 2)), (1.0, 1.0, 1.0))
    with pytest.raises(BoxunetError, match="is 2D, the model was trained on 3D"):
        predictor.predict(sitk.Image(20, 20, sitk.sitkFloat32))
    with pytest.raises(BoxunetError, match="4D"):
        predictor.predict(sitk.Image([8, 8, 8, 2], sitk.sitkFloat32))
    shifted = sitk.Image(image)
    shifted.SetOrigin((0.0, 0.0, 0.0))
    with pytest.raises(BoxunetError, match="channel 1 origin"):
        predictor.predict([image, shifted])
    nan = sitk.GetArrayFromImage(image).astype(np.float32)
    nan[0, 0, 0] = np.nan
    with pytest.raises(BoxunetError, match="NaN"):
        predictor.predict_array(nan, ODD_GEOMETRY.spacing)
    with pytest.raises(BoxunetError, match="workers -1"):
        predictor.predict_many([image], workers=-1)
    with pytest.raises(BoxunetError, match="precision 'fp64'"):
        boxunet.Predictor(random_model, precision="fp64")
    with pytest.raises(BoxunetError, match="missing checkpoint"):
        boxunet.Predictor(random_model, folds=[3])
    with pytest.raises(BoxunetError, match="not a model folder"):
        boxunet.Predictor(tmp_path)


def test_pseudo_masks_in_memory_are_the_masks_boxunet_pseudo_labels_writes(roots):
    dataset = write_tiny_dataset(roots["raw"], num_cases=3)
    pseudo_labels_main(["-d", "1", "-np", "1", "--quiet"])
    stage1 = roots["preprocessed"] / "Dataset001_Tiny" / "pseudo_labels" / "stage1"
    for index in range(3):
        case = f"case_{index:03d}"
        image = sitk.ReadImage(str(dataset / "imagesTr" / f"{case}_0000.nii.gz"))
        labels = sitk.ReadImage(str(dataset / "labelsTr" / f"{case}.nii.gz"))
        kidney_only = sitk.GetArrayFromImage(labels)
        kidney_only[kidney_only == 2] = 0  # the tumor is known by its boxes only
        boxes = read_boxes(dataset / "boxesTr" / f"{case}.json")
        masks = boxunet.pseudo_masks(image, boxes, kidney_only, dataset=1)
        written, geometry = read_image(stage1 / f"{case}.nii.gz")
        np.testing.assert_array_equal(sitk.GetArrayFromImage(masks), written)
        assert masks.GetSpacing() == pytest.approx(geometry.spacing[::-1])
        as_dicts = [{"label": b.label, "min": list(b.min), "max": list(b.max)} for b in boxes]
        plain = boxunet.pseudo_masks(sitk.GetArrayFromImage(image), as_dicts, kidney_only,
                                     spacing=geometry.spacing)  # the defaults: convcrf, tight boxes
        np.testing.assert_array_equal(plain, written)
        assert (written == 2).sum() > 0
    with pytest.raises(BoxunetError, match="outside the image"):
        boxunet.pseudo_masks(image, [{"label": 2, "min": [0, 0, 0], "max": [99, 5, 5]}])
    with pytest.raises(BoxunetError, match="needs its spacing"):
        boxunet.pseudo_masks(sitk.GetArrayFromImage(image), boxes)
    with pytest.raises(BoxunetError, match="method 'template'"):
        boxunet.pseudo_masks(image, boxes, method="template")
