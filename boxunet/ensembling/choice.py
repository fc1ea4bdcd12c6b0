"""The model chosen by cross-validation, as ``boxunet_predict`` without ``-c`` uses it.

``boxunet_find_best_configuration`` (run by itself when ``boxunet_train DATASET CONFIGURATION`` finishes the
last fold of a model) writes ``inference_information.json`` into the dataset's results folder: the best single
model or pair of models, the folds, the postprocessing file and the stamps of every fold's final checkpoint.
A choice whose checkpoints were deleted or retrained since is stale: it is refused, never predicted with.
"""
from dataclasses import dataclass
from pathlib import Path

from boxunet.ensembling.find_best import ENSEMBLES_FOLDER, INFORMATION_FILE, checkpoint_stamps
from boxunet.errors import BoxunetError
from boxunet.io.atomic import read_json
from boxunet.io.dataset_locator import find_dataset_folder
from boxunet.io.model_folder import parse_model_folder_name
from boxunet.paths import results_root
from boxunet.postprocessing.decision import POSTPROCESSING_FILE_NAME


@dataclass(frozen=True)
class ChosenModel:
    """The best model or ensemble of a dataset's cross-validation."""

    name: str
    members: tuple[Path, ...]  # model folders; two or more: their probabilities are averaged
    folds: tuple[str, ...]
    postprocessing_file: Path | None  # an ensemble's decision (a single model's is in its own folder)
    foreground_mean_dice: float

    @property
    def is_ensemble(self) -> bool:
        return len(self.members) > 1

    def describe(self) -> str:
        """One line: what predicts, with which folds and cross-validation Dice."""
        models = " + ".join(member.name for member in self.members)
        kind = "ensemble of " if self.is_ensemble else ""
        return (f"{kind}{models}, {len(self.folds)}-fold ensemble (folds {' '.join(self.folds)}), "
                f"cross-validation foreground mean Dice {self.foreground_mean_dice:.4f}")


def _stale_problems(members: list[Path], folds: list[str], recorded: dict) -> list[str]:
    problems = []
    for member in members:
        if not member.is_dir():
            problems.append(f"{member.name}: its model folder {member} is gone")
            continue
        now, then = checkpoint_stamps(member, folds), recorded.get(member.name, {})
        for fold in folds:
            if now[fold] is None:
                problems.append(f"{member.name}: fold {fold} has no checkpoint_final.pth any more")
            elif now[fold] != then.get(fold):
                problems.append(f"{member.name}: fold {fold} was retrained since")
    return problems


def load_choice(dataset: str) -> ChosenModel:
    """The chosen model of ``dataset``, after checking that every member fold is the one it was chosen with
    (a BoxunetError says which command makes or remakes the choice)."""
    dataset_results = find_dataset_folder(dataset, results_root())
    information_file = dataset_results / INFORMATION_FILE
    remake = f"boxunet_find_best_configuration {dataset}"
    if not information_file.is_file():
        raise BoxunetError(f"no model of {dataset_results.name} is chosen yet ({information_file} is missing): train "
                           f"every fold (boxunet_train {dataset} CONFIGURATION) or run {remake}, or name a model "
                           "with -c CONFIGURATION")
    information = read_json(information_file)
    best = information.get("best") if isinstance(information, dict) else None
    if not isinstance(best, dict) or "checkpoints" not in best:
        raise BoxunetError(f"file {information_file}: written by an older boxunet without the checkpoints it was "
                           f"chosen from; run {remake} again")
    members = [dataset_results / name for name in best["members"]]
    for member in members:
        parse_model_folder_name(member)
    folds = [str(fold) for fold in information["folds"]]
    problems = _stale_problems(members, folds, best["checkpoints"])
    if problems:
        raise BoxunetError(f"the choice in {information_file} is stale, predicting with it would use other networks "
                           "than the ones cross-validated:\n" + "\n".join(f"  - {p}" for p in problems)
                           + f"\nfinish the training of those folds, then run {remake}")
    postprocessing = None  # a single model applies the decision find_best put into its folder
    if len(members) > 1 and best.get("postprocessing_steps"):
        postprocessing = dataset_results / ENSEMBLES_FOLDER / best["name"] / POSTPROCESSING_FILE_NAME
        if not postprocessing.is_file():
            raise BoxunetError(f"the chosen ensemble's postprocessing {postprocessing} is missing; run {remake} again")
    return ChosenModel(best["name"], tuple(members), tuple(folds), postprocessing, best["foreground_mean_dice"])
