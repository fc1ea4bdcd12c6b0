"""``boxunet.trainers``: built-in trainers by name, installed packages' through the boxunet.trainers entry points,
the default trainer of a dataset, and the command line's trainer-specific options."""
import pytest
from conftest import install_trainers

from boxunet.cli.train import option_flags
from boxunet.errors import BoxunetError
from boxunet.trainers import BUILT_IN_TRAINERS, available_trainers, default_trainer, get_trainer
from boxunet.training.box.options import BoxThreeStageOptions
from boxunet.training.options import TrainingOptions
from boxunet.training.trainer import Trainer


def test_every_built_in_trainer_imports_under_its_name():
    for name in BUILT_IN_TRAINERS:
        trainer = get_trainer(name)
        assert trainer.__name__ == name and issubclass(trainer, Trainer)
    assert get_trainer("BoxThreeStage").options_class is BoxThreeStageOptions
    assert get_trainer("BoxFill").options_class is TrainingOptions
    assert default_trainer([2]) == "BoxThreeStage" and default_trainer([]) == "Trainer"
    with pytest.raises(BoxunetError, match="unknown trainer 'Nope'.*boxunet.trainers entry-point group"):
        get_trainer("Nope")


def test_entry_points_add_trainers_and_may_not_shadow_or_rename(tmp_path, monkeypatch):
    (tmp_path / "extra_trainers.py").write_text("from boxunet.training.trainer import Trainer\n\n"
                                                "class TrainerExtra(Trainer):\n    pass\n")
    install_trainers(tmp_path, "extra", {"TrainerExtra": "extra_trainers:TrainerExtra",
                                         "Renamed": "extra_trainers:TrainerExtra"}, monkeypatch)
    assert available_trainers()["TrainerExtra"] == "extra_trainers:TrainerExtra"
    assert get_trainer("TrainerExtra").__name__ == "TrainerExtra"
    with pytest.raises(BoxunetError, match="entry point names class TrainerExtra"):
        get_trainer("Renamed")
    install_trainers(tmp_path / "other", "shadow", {"Trainer": "extra_trainers:TrainerExtra"}, monkeypatch)
    with pytest.raises(BoxunetError, match="reuses the name of a built-in trainer"):
        available_trainers()


def test_each_options_class_adds_its_own_flags():
    base = option_flags(TrainingOptions)
    assert {"--epochs", "--iters-per-epoch", "--schedule", "-np", "--npz", "--quiet"} <= base
    assert option_flags(BoxThreeStageOptions) - base == {"--k", "--group-epochs", "--loss"}
    with pytest.raises(BoxunetError, match="--loss 'dice'"):
        BoxThreeStageOptions(box_loss="dice")
