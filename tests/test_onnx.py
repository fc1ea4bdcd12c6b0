"""ONNX export (boxunet_export_onnx) and prediction with onnxruntime (boxunet_predict --backend onnxruntime): the
exported graph gives the PyTorch fp32 label maps; a stale or foreign description is refused."""
import json

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import odd_input_image, random_unet_model

import boxunet
from boxunet.cli.export_onnx import main as export_main
from boxunet.cli.predict import main as predict_main
from boxunet.errors import BoxunetError
from boxunet.inference.model import TrainedModel
from boxunet.inference.onnx_model import check_exportable
from boxunet.io.images import read_image
from boxunet.training.trainer import Trainer

pytest.importorskip("onnxruntime", reason="the onnx extra (pip install 'boxunet[onnx]'; the test extra has it)")

pytestmark = pytest.mark.filterwarnings("ignore:.*unlike every training image", "ignore::DeprecationWarning",
                                        "ignore::FutureWarning")


def _predict(tmp_path, output: str, *extra: str) -> None:
    predict_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / output), "-d", "1", "-c", "3d_fullres", "--quiet",
                  "-np", "0", "--precision", "fp32", *extra])


def test_exported_graph_predicts_the_pytorch_label_maps(roots, tmp_path, capsys):
    folder = random_unet_model(roots)
    for seed in (7,):
        odd_input_image(tmp_path / "in", f"new_{seed}", seed)
    export_main(["-d", "1", "-c", "3d_fullres"])
    description = json.loads((folder / "model.json").read_text())
    assert description["folds"] == ["0", "1"] and description["num_outputs"] == 3
    assert description["patch_size"] == description["plans"]["configurations"]["3d_fullres"]["patch_size"]
    _predict(tmp_path, "torch")
    _predict(tmp_path, "onnx", "--backend", "onnxruntime")
    for seed in (7,):
        reference, geometry = read_image(tmp_path / "torch" / f"new_{seed}.nii.gz")
        exported, exported_geometry = read_image(tmp_path / "onnx" / f"new_{seed}.nii.gz")
        assert exported_geometry == geometry
        assert len(np.unique(reference)) > 1
        np.testing.assert_array_equal(exported, reference)
    record = json.loads((tmp_path / "onnx" / "prediction_settings.json").read_text())
    assert "model.onnx" in record["checkpoints"] and record["precision"] == "fp32"
    image = sitk.ReadImage(str(tmp_path / "in" / "new_7_0000.nii.gz"))  # the graph stays here; workers get arrays
    for labels in boxunet.Predictor(folder, backend="onnxruntime").predict_many([image, image], workers=1):
        np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), reference)


def test_a_description_that_does_not_match_the_model_is_refused(roots, tmp_path):
    folder = random_unet_model(roots)
    odd_input_image(tmp_path / "in", "new")
    with pytest.raises(SystemExit, match="model.onnx does not exist; export the model first"):
        _predict(tmp_path, "missing", "--backend", "onnxruntime")
    export_main(["-d", "1", "-c", "3d_fullres", "-f", "0"])
    with pytest.raises(SystemExit, match="averages folds 0, not 0 1"):
        _predict(tmp_path, "folds", "--backend", "onnxruntime", "-f", "0", "1")
    description = json.loads((folder / "model.json").read_text())
    description["dataset_json"]["labels"]["cyst"] = 3
    (folder / "model.json").write_text(json.dumps(description))
    with pytest.raises(SystemExit, match="model.json does not match model .*dataset.json .* differs"):
        _predict(tmp_path, "labels", "--backend", "onnxruntime")
    export_main(["-d", "1", "-c", "3d_fullres", "-f", "0"])
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes((folder / "fold_1" / "checkpoint_final.pth").read_bytes())
    with pytest.raises(SystemExit, match="fold_0/checkpoint_final.pth changed since the export"):
        _predict(tmp_path, "stale", "--backend", "onnxruntime")
    with pytest.raises(SystemExit, match="runs in fp32"):
        predict_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "bf16"), "-d", "1", "-c", "3d_fullres",
                      "--backend", "onnxruntime", "--precision", "bf16"])


def test_trainers_with_their_own_prediction_pipeline_are_not_exported():
    class Pipeline(Trainer):
        @classmethod
        def predict_preprocessed(cls, *args, **kwargs):
            return super().predict_preprocessed(*args, **kwargs)

    model = TrainedModel(None, None, None, {}, Pipeline, [], [], (), 2, {})
    with pytest.raises(BoxunetError, match="predicts with its own pipeline"):
        check_exportable(model)
    check_exportable(TrainedModel(None, None, None, {}, Trainer, [], [], (), 2, {}))
