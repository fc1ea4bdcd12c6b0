"""The training engine end to end on a tiny dataset: losses fall, outputs exist, resume is exact, DDP runs."""
import json

import pytest
import torch
from conftest import install_trainers, plan_tiny_3d_fullres, write_tiny_dataset

from boxunet.errors import BoxunetError
from boxunet.io.checkpoint import load_checkpoint, save_checkpoint
from boxunet.nets.precision import resolve_precision
from boxunet.trainers import get_trainer
from boxunet.training.box.options import BoxThreeStageOptions
from boxunet.training.distributed import rank_share_of_batch
from boxunet.training.options import TrainingOptions, result_options
from boxunet.training.progress import TrainingProgress, WaitTimer, duration
from boxunet.training.run import TrainingRequest, resume_checkpoint, run_training
from boxunet.training.schedules import paper_learning_rate, poly_learning_rate
from boxunet.training.splits import create_splits
from boxunet.training.trainer import Trainer


def request(fold="0", epochs=2, **kwargs) -> TrainingRequest:
    options = TrainingOptions(epochs=epochs, iterations_per_epoch=kwargs.pop("iterations", 4), validation_iterations=1,
                              augmentation_workers=0, save_every=1, progress_bar=False)
    return TrainingRequest("1", "3d_fullres", fold, get_trainer(kwargs.pop("trainer", "Trainer")), device="cpu",
                           options=options, **kwargs)


def test_paper_learning_rate_decays_100_fold_over_the_run():
    assert [paper_learning_rate(e, 100) for e in (0, 50, 100)] == pytest.approx([1e-3, 1e-4, 1e-5])
    assert paper_learning_rate(10, 20) == pytest.approx(paper_learning_rate(500, 1000))


def test_poly_learning_rate():
    assert poly_learning_rate(0.01, 0, 1000) == 0.01
    assert poly_learning_rate(0.01, 500, 1000) == pytest.approx(0.01 * 0.5 ** 0.9)
    assert poly_learning_rate(0.01, 1000, 1000) == 0.0


def test_epoch_line_says_the_data_wait_and_the_training_time_left(monkeypatch):
    progress = TrainingProgress()
    for seconds in (10.0, 30.0, 20.0):
        progress.record(0.5, 0.4, [0.81234, float("nan")], 0.01, seconds)
    line = progress.epoch_line(2, 8, ["kidney", "tumor"], later_epochs=4, data_wait=5.0)
    # the median epoch (20 s) x (8 - 3 epochs left of this network + 4 of later ones) = 180 s = 3 min
    assert line == ("epoch 3/8: train loss 0.5000, val loss 0.4000, pseudo Dice [kidney 0.8123, tumor nan] "
                    "(EMA 0.8123), lr 0.010000, 20.0 s (data wait 25%); 3 min of training left")
    assert [duration(s) for s in (45, 89.6, 3000, 5400, 7560)] == ["45 s", "90 s", "50 min", "1.5 h", "2.1 h"]
    clock = iter([0.0, 2.0, 5.0, 5.5])
    monkeypatch.setattr("boxunet.training.progress.time.perf_counter", lambda: next(clock))
    batches = WaitTimer(iter(["a", "b"]))
    assert [next(batches), next(batches)] == ["a", "b"] and batches.seconds == 2.5


def test_splits_are_kfold_over_sorted_ids():
    splits = create_splits([f"case_{i}" for i in (5, 3, 1, 0, 2, 4, 6, 7, 8, 9)])
    assert len(splits) == 5
    assert all(len(s["val"]) == 2 and len(s["train"]) == 8 for s in splits)
    assert sorted(sum((s["val"] for s in splits), [])) == [f"case_{i}" for i in range(10)]
    with pytest.raises(BoxunetError, match="cannot be split"):
        create_splits(["a", "b"])


@pytest.mark.slow
def test_short_training_learns_and_writes_every_output(dense_tiny):
    folder = run_training(request(epochs=3, iterations=6))
    for name in ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth", "training_log.txt",
                 "progress.png", "debug.json", "validation/summary.json"):
        assert (folder / name).is_file(), name
    state = load_checkpoint(folder / "checkpoint_final.pth")
    losses = state["progress"]["train_loss"]
    assert len(losses) == 3 and losses[-1] < losses[0]
    summary = json.loads((folder / "validation" / "summary.json").read_text())
    splits = json.loads((dense_tiny["preprocessed"] / "Dataset001_Tiny" / "splits_final.json").read_text())
    assert [c["reference_file"].split("/")[-1] for c in summary["metric_per_case"]] == \
        [f"{case}.nii.gz" for case in splits[0]["val"]]
    assert set(summary["mean"]) == {"0", "1", "2"}
    assert 0.0 <= summary["foreground_mean"]["Dice"] <= 1.0
    debug = json.loads((folder / "debug.json").read_text())
    assert debug["options"]["epochs"] == 3 and debug["val_cases"] == splits[0]["val"]
    log = (folder / "training_log.txt").read_text()
    assert log.count("pseudo Dice [kidney") == 3
    # auto: bf16 steps on a CPU with native bfloat16, else fp32 (like prediction)
    assert f"device cpu, {resolve_precision(torch.device('cpu'))}, world size 1" in log
    (folder / "validation" / "summary.json").unlink()
    run_training(request(epochs=3, iterations=6, validation_only=True))
    assert (folder / "validation" / "summary.json").is_file()
    assert load_checkpoint(folder / "checkpoint_final.pth")["current_epoch"] == 3


@pytest.mark.slow
def test_resume_equals_uninterrupted_training(dense_tiny, tmp_path, monkeypatch):
    uninterrupted = run_training(request(epochs=2))
    reference = load_checkpoint(uninterrupted / "checkpoint_final.pth")["network_weights"]
    monkeypatch.setenv("boxunet_results", str(tmp_path / "other_results"))
    first = run_training(request(epochs=1))
    resumed = run_training(request(epochs=2, continue_training=True, explicit_options=("epochs",)))
    assert resumed == first
    state = load_checkpoint(resumed / "checkpoint_final.pth")
    assert state["current_epoch"] == 2 and len(state["progress"]["train_loss"]) == 2
    for name, tensor in reference.items():
        assert torch.allclose(tensor, state["network_weights"][name], atol=1e-6), name


@pytest.mark.slow
def test_two_process_gloo_training(dense_tiny):
    folder = run_training(request(fold="1", epochs=1, iterations=2, num_gpus=2))
    assert "world size 2" in (folder / "training_log.txt").read_text()
    assert (folder / "validation" / "summary.json").is_file()
    assert load_checkpoint(folder / "checkpoint_final.pth")["current_epoch"] == 1


@pytest.mark.slow
def test_validation_only_and_bad_input(dense_tiny):
    with pytest.raises(BoxunetError, match="--val-only needs"):
        run_training(request(validation_only=True))
    with pytest.raises(BoxunetError, match="configuration '3d_lowres' is not in the plans"):
        run_training(TrainingRequest("1", "3d_lowres", "0", Trainer, device="cpu"))
    with pytest.raises(BoxunetError, match="unknown trainer 'NoSuchTrainer'"):
        run_training(request(trainer="NoSuchTrainer"))
    with pytest.raises(BoxunetError, match="no folder Dataset002_"):
        run_training(TrainingRequest("2", "3d_fullres", "0", Trainer, device="cpu"))
    with pytest.raises(BoxunetError, match="fold 'x'"):
        run_training(request(fold="x"))


@pytest.mark.slow
def test_corrupt_checkpoint_is_a_clear_error(dense_tiny):
    folder = run_training(request(epochs=1, iterations=1))
    (folder / "checkpoint_final.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(BoxunetError, match="cannot be loaded"):
        run_training(request(epochs=2, continue_training=True, explicit_options=("epochs",)))


@pytest.mark.slow
def test_external_trainer_from_an_entry_point(dense_tiny, tmp_path, monkeypatch):
    (tmp_path / "my_trainers.py").write_text("from boxunet.training.trainer import Trainer\n\n"
                                             "class TrainerHalfLR(Trainer):\n"
                                             "    def build_optimizer(self):\n"
                                             "        self.options.initial_lr = self.options.initial_lr / 2\n"
                                             "        return super().build_optimizer()\n")
    install_trainers(tmp_path, "my_trainers", {"TrainerHalfLR": "my_trainers:TrainerHalfLR"}, monkeypatch)
    folder = run_training(request(epochs=1, iterations=1, trainer="TrainerHalfLR"))
    assert folder.parent.name == "TrainerHalfLR__boxunetPlans__3d_fullres"
    assert load_checkpoint(folder / "checkpoint_final.pth")["progress"]["learning_rate"] == [0.005]


def test_data_parallel_ranks_oversample_like_one_process():
    # global batch 2, p = 0.33: sample 1 (index >= round(2 * 0.67) = 1) is forced; each rank gets one sample
    assert [rank_share_of_batch(2, 0.33, r, 2) for r in range(2)] == [[False], [True]]
    # batch 4: round(4 * 0.67) = 3 -> only the last sample is forced
    assert [rank_share_of_batch(4, 0.33, r, 2) for r in range(2)] == [[False, False], [False, True]]
    assert [rank_share_of_batch(5, 0.33, r, 2) for r in range(2)] == [[False, False, False], [True, True]]
    with pytest.raises(BoxunetError, match="smaller than the 3 processes"):
        rank_share_of_batch(2, 0.33, 0, 3)


def test_resume_picks_the_furthest_checkpoint_and_keeps_the_run_options(tmp_path):
    options = BoxThreeStageOptions(epochs=300, iterations_per_epoch=50, seed=7)
    for name, epoch in (("checkpoint_final.pth", 100), ("checkpoint_latest.pth", 150), ("checkpoint_best.pth", 140)):
        save_checkpoint({"network_weights": {}, "optimizer_state": {}, "current_epoch": epoch, "trainer_name": "Trainer",
                         "options": vars(options), "configuration": "3d_fullres"}, tmp_path / name)
    path, saved = resume_checkpoint(tmp_path)
    assert path.name == "checkpoint_latest.pth"
    plain = BoxThreeStageOptions(progress_bar=False).resumed(saved, ())
    assert (plain.epochs, plain.iterations_per_epoch, plain.seed, plain.progress_bar) == (300, 50, 7, False)
    extended = BoxThreeStageOptions(epochs=500).resumed(saved, ("epochs",))
    assert (extended.epochs, extended.iterations_per_epoch) == (500, 50)
    with pytest.raises(BoxunetError, match=r"group_networks 3 -> 0.*box_loss 'vwce' -> 'wce'"):
        BoxThreeStageOptions(group_networks=0, box_loss="wce").resumed(saved, ("group_networks", "box_loss"))
    same = BoxThreeStageOptions(group_networks=3).resumed(saved, ("group_networks",))
    assert same.group_networks == 3
    # a checkpoint saved before group epochs were fixed at the start: None meant the run's 300 epochs
    assert saved["group_epochs"] is None and plain.group_epochs == 300 and extended.group_epochs == 300
    pinned = BoxThreeStageOptions(group_epochs=300).resumed(saved, ("group_epochs",))
    assert pinned.group_epochs == 300
    assert TrainingOptions(epochs=500).resumed(saved, ("epochs",)).epochs == 500, "the engine's options resume too"
    # how often checkpoints are written changes no result: taken from the command line, not compared
    assert saved["save_every"] == 10 and BoxThreeStageOptions(save_every=1).resumed(saved, ()).save_every == 1
    assert result_options(TrainingOptions(save_every=1)) == result_options(TrainingOptions())


@pytest.mark.slow
def test_region_training(roots):
    """Labels given as regions (kidney = {1, 2}, tumor = {2}) train with sigmoid outputs and are evaluated per region."""
    folder = write_tiny_dataset(roots["raw"], num_cases=6, with_boxes=False, shape=(16, 48, 40))
    description = json.loads((folder / "dataset.json").read_text())
    description.update(labels={"background": 0, "kidney": [1, 2], "tumor": 2}, regions_class_order=[1, 2])
    (folder / "dataset.json").write_text(json.dumps(description))
    plan_tiny_3d_fullres()
    output = run_training(request(epochs=1, iterations=2))
    assert "pseudo Dice [kidney" in (output / "training_log.txt").read_text()
    summary = json.loads((output / "validation" / "summary.json").read_text())
    assert list(summary["mean"]) == ["(1, 2)", "2"]


@pytest.mark.slow
def test_bf16_steps_on_the_cpu(dense_tiny):
    """``--precision bf16`` runs the steps' forward passes in bfloat16 (the losses in float32)."""
    options = TrainingOptions(epochs=1, iterations_per_epoch=2, validation_iterations=1, augmentation_workers=0,
                              progress_bar=False, precision="bf16")
    folder = run_training(TrainingRequest("1", "3d_fullres", "2", Trainer, device="cpu", options=options))
    assert "device cpu, bf16, world size 1" in (folder / "training_log.txt").read_text()
    state = load_checkpoint(folder / "checkpoint_final.pth")
    assert state["options"]["precision"] == "bf16" and torch.isfinite(torch.tensor(state["progress"]["train_loss"])).all()
