"""boxunet_predict: geometry is reproduced exactly, folds are averaged, bad input is refused before any
work, failing cases are reported while the others are written, --continue skips finished cases."""
import json

import numpy as np
import pytest
import torch
from conftest import install_trainers, make_case_arrays, plan_tiny_3d_fullres, write_tiny_dataset
from torch import nn

from boxunet.cli.predict import main as predict_main
from boxunet.errors import BoxunetError
from boxunet.inference.model import load_trained_model
from boxunet.io.images import Geometry, read_image, write_image
from boxunet.io.model_folder import write_model_files
from boxunet.nets.precision import autocast, cpu_has_native_bfloat16, resolve_precision
from boxunet.planning.plans import load_plans
from boxunet.training.trainer import Trainer


class _ConstantLogits(nn.Module):
    """Logits that do not depend on the input: ``bias`` per class in every voxel."""

    def __init__(self, num_outputs: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_outputs))

    def forward(self, x):
        return self.bias.reshape(1, -1, *[1] * (x.ndim - 2)).expand(x.shape[0], -1, *x.shape[2:]) + 0 * x[:, :1]


class ConstantTrainer(Trainer):
    """A trainer whose network predicts fixed logits (used to check prediction's geometry handling)."""

    @classmethod
    def build_network(cls, plans, configuration, num_outputs, settings):
        return _ConstantLogits(num_outputs)


@pytest.fixture
def constant_trainer(roots, tmp_path, monkeypatch):
    """The roots, with ConstantTrainer installed as an external trainer (prediction finds it by name)."""
    install_trainers(tmp_path / "site", "constant_trainer", {"ConstantTrainer": f"{__name__}:ConstantTrainer"},
                     monkeypatch)
    return roots


def _constant_model(roots, logits_per_fold: list[list[float]], file_ending: str = ".nii.gz"):
    """A ConstantTrainer model folder for the tiny dataset with one fold per entry of ``logits_per_fold``."""
    dataset = write_tiny_dataset(roots["raw"], num_cases=4, with_boxes=False, shape=(12, 40, 36),
                                 file_ending=file_ending)
    plan_tiny_3d_fullres()
    folder = roots["results"] / "Dataset001_Tiny" / "ConstantTrainer__boxunetPlans__3d_fullres"
    plans = load_plans(roots["preprocessed"] / "Dataset001_Tiny" / "boxunet_plans.json")
    write_model_files(folder, plans.to_json(), dataset / "dataset.json")
    for fold, logits in enumerate(logits_per_fold):
        (folder / f"fold_{fold}").mkdir()
        torch.save({"network_weights": {"bias": torch.tensor(logits)}, "optimizer_state": {}, "current_epoch": 1,
                    "trainer_name": "ConstantTrainer", "options": {}, "configuration": "3d_fullres",
                    "num_outputs": 3, "inference_allowed_mirroring_axes": [0, 1, 2]},
                   folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


def _write_input(folder, case_id: str, geometry: Geometry, seed: int = 7, ending: str = ".nii.gz"):
    image, _ = make_case_arrays(seed, geometry.shape)
    image[image < -500] = 20  # no air border: the crop to nonzero is the whole image
    folder.mkdir(parents=True, exist_ok=True)
    write_image(image, geometry, folder / f"{case_id}_0000{ending}")


ODD_GEOMETRY = Geometry((2.7, 0.9, 1.1), (12.5, -30.25, 7.0), (0, 1, 0, 1, 0, 0, 0, 0, -1), (11, 37, 29))


def test_constant_model_reproduces_the_input_geometry_exactly(constant_trainer, tmp_path):
    _constant_model(constant_trainer, [[0.0, 2.0, -1.0], [0.0, -1.0, 3.0]])  # fold average: class 1 logit 0.5, class 2 1.0
    _write_input(tmp_path / "in", "new", ODD_GEOMETRY)
    predict_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-d", "1", "-c", "3d_fullres",
                  "-tr", "ConstantTrainer", "--quiet", "-np", "0"])
    labels, geometry = read_image(tmp_path / "out" / "new.nii.gz")
    assert geometry.shape == ODD_GEOMETRY.shape and labels.shape == ODD_GEOMETRY.shape
    assert np.allclose(geometry.spacing, ODD_GEOMETRY.spacing, atol=1e-6)
    assert np.allclose(geometry.origin, ODD_GEOMETRY.origin, atol=1e-6)
    assert np.allclose(geometry.direction, ODD_GEOMETRY.direction)
    assert np.all(labels == 2), "the average of the folds' logits picks class 2 everywhere"
    for name in ("boxunet_plans.json", "dataset.json", "prediction_settings.json", "prediction_report.json"):
        assert (tmp_path / "out" / name).is_file(), name
    report = json.loads((tmp_path / "out" / "prediction_report.json").read_text())
    assert report["predicted"] == ["new"] and report["failed"] == [] and set(report["network_seconds"]) == {"new"}
    # only fold 0: class 1 wins; probabilities are written for ensembling
    predict_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "fold0"), "-d", "1", "-c", "3d_fullres",
                  "-tr", "ConstantTrainer", "-f", "0", "--save-probabilities", "--quiet", "-np", "0"])
    assert np.all(read_image(tmp_path / "fold0" / "new.nii.gz")[0] == 1)
    probabilities = np.load(tmp_path / "fold0" / "new.npz")["probabilities"]
    expected = np.exp([0.0, 2.0, -1.0]) / np.exp([0.0, 2.0, -1.0]).sum()
    assert probabilities.shape == (3,) + ODD_GEOMETRY.shape
    assert np.allclose(probabilities[:, 5, 18, 14], expected, atol=2e-3)


def test_bad_input_is_refused_before_any_output(constant_trainer, tmp_path):
    _constant_model(constant_trainer, [[0.0, 1.0, 0.0]])
    inputs = tmp_path / "in"
    _write_input(inputs, "a", ODD_GEOMETRY)
    (inputs / "b_0001.nii.gz").write_bytes(b"not an image")  # channel 1 of a one-channel dataset
    (inputs / "c_0000.nii.gz").write_bytes(b"not an image")
    arguments = ["-i", str(inputs), "-o", str(tmp_path / "out"), "-d", "1", "-c", "3d_fullres", "-tr", "ConstantTrainer",
                 "--quiet"]
    with pytest.raises(SystemExit, match=r"(?s)case 'b'.*channel\(s\) \[0\] missing.*case 'c'.*c_0000.nii.gz"):
        predict_main(arguments)
    assert not (tmp_path / "out").exists()
    (inputs / "b_0001.nii.gz").unlink()
    (inputs / "c_0000.nii.gz").unlink()
    with pytest.raises(SystemExit, match="inside the input folder"):
        predict_main(arguments[:2] + ["-o", str(inputs / "out")] + arguments[4:])
    with pytest.raises(SystemExit, match="fold_3/checkpoint_final.pth"):
        predict_main(arguments + ["-f", "0", "3"])
    with pytest.raises(SystemExit, match="no trained model Trainer__boxunetPlans__2d"):
        predict_main(arguments[:6] + ["-c", "2d"])
    with pytest.raises(SystemExit, match="no folder Dataset007"):
        predict_main(arguments[:4] + ["-d", "7"] + arguments[6:])
    assert not (tmp_path / "out").exists() and not (inputs / "out").exists()


def test_a_failing_case_is_reported_and_continue_skips_finished_cases(constant_trainer, tmp_path):
    _constant_model(constant_trainer, [[0.0, 1.0, 0.0]], file_ending=".mha")
    inputs = tmp_path / "in"
    for case_id in ("a", "b"):
        _write_input(inputs, case_id, ODD_GEOMETRY, ending=".mha")
    # case c has a valid header but a NaN voxel: it fails only when its voxels are read
    image = np.zeros(ODD_GEOMETRY.shape, np.float32)
    image[3, 4, 5] = np.nan
    write_image(image, ODD_GEOMETRY, inputs / "c_0000.mha")
    arguments = ["-i", str(inputs), "-o", str(tmp_path / "out"), "-d", "1", "-c", "3d_fullres", "-tr", "ConstantTrainer",
                 "--quiet", "-np", "0"]
    with pytest.raises(SystemExit, match=r"(?s)1 of 3 case\(s\) failed.*case 'c'.*NaN"):
        predict_main(arguments)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.mha")) == ["a.mha", "b.mha"]
    report = json.loads((tmp_path / "out" / "prediction_report.json").read_text())
    assert report["predicted"] == ["a", "b"] and [f["case"] for f in report["failed"]] == ["c"]
    (inputs / "c_0000.mha").unlink()
    before = (tmp_path / "out" / "a.mha").stat().st_mtime_ns
    predict_main(arguments + ["--continue"])
    report = json.loads((tmp_path / "out" / "prediction_report.json").read_text())
    assert report["skipped"] == ["a", "b"] and report["predicted"] == []
    assert (tmp_path / "out" / "a.mha").stat().st_mtime_ns == before


def test_folds_are_loaded_without_deep_supervision_and_with_their_mirror_axes(constant_trainer):
    folder = _constant_model(constant_trainer, [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    model = load_trained_model(folder, None, "checkpoint_final.pth", torch.device("cpu"), ConstantTrainer)
    assert model.folds == ["0", "1"] and model.mirror_axes == (0, 1, 2) and model.num_outputs == 3
    assert not any(network.training for network in model.networks)
    with pytest.raises(BoxunetError, match="no fold with checkpoint_best.pth"):
        load_trained_model(folder, None, "checkpoint_best.pth", torch.device("cpu"), ConstantTrainer)


def test_precision_choice_and_bfloat16_forward_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_precision(torch.device("cuda"), "auto") == "fp16"
    assert resolve_precision(cpu, "auto") == ("bf16" if cpu_has_native_bfloat16() else "fp32")
    assert resolve_precision(cpu, "fp32") == "fp32"
    with pytest.raises(ValueError, match="precision 'int8'"):
        resolve_precision(cpu, "int8")
    torch.manual_seed(0)
    conv = nn.Conv3d(2, 3, 3, padding=1)
    data = torch.randn(1, 2, 6, 8, 8)
    with torch.no_grad():
        exact = conv(data)
        with autocast(cpu, "bf16"):
            reduced = conv(data)
    assert reduced.dtype == torch.bfloat16
    assert torch.allclose(reduced.float(), exact, atol=0.05)


def test_unsuffixed_files_duplicates_and_the_models_postprocessing(constant_trainer, tmp_path):
    folder = _constant_model(constant_trainer, [[0.0, 1.0, 0.0]])
    inputs = tmp_path / "in"
    inputs.mkdir()
    image, _ = make_case_arrays(3, ODD_GEOMETRY.shape)
    write_image(image, ODD_GEOMETRY, inputs / "plain.nii.gz")  # one-channel data: no _0000 needed
    (folder / "postprocessing.json").write_text(json.dumps(
        {"connectivity": 26, "steps": [{"labels": [1, 2], "name": "whole foreground"}]}))
    arguments = ["-i", str(inputs), "-d", "1", "-c", "3d_fullres", "-tr", "ConstantTrainer", "--quiet"]
    predict_main(arguments + ["-o", str(tmp_path / "out")])
    assert read_image(tmp_path / "out" / "plain.nii.gz")[0].shape == ODD_GEOMETRY.shape
    settings = json.loads((tmp_path / "out" / "prediction_settings.json").read_text())
    assert settings["postprocessing"]["steps"][0]["name"] == "whole foreground"
    predict_main(arguments + ["-o", str(tmp_path / "raw_out"), "--no-postprocessing"])
    assert json.loads((tmp_path / "raw_out" / "prediction_settings.json").read_text())["postprocessing"] is None
    (folder / "postprocessing.json").write_text("{\"steps\": 3}")
    with pytest.raises(SystemExit, match="not a postprocessing file"):
        predict_main(arguments + ["-o", str(tmp_path / "never")])
    assert not (tmp_path / "never").exists()
    write_image(image, ODD_GEOMETRY, inputs / "plain_0000.nii.gz")
    with pytest.raises(SystemExit, match="two files for channel 0: plain.nii.gz and plain_0000.nii.gz"):
        predict_main(arguments + ["-o", str(tmp_path / "never")])
