"""Where a cascade's training finds the previous stage's segmentations of its cases, without leaks.

A case's previous-stage input comes only from the cross-validation prediction of the previous stage's
fold that held that case out (``validation/<case><ending>`` of a finished fold whose ``debug.json`` lists
the case among its validation cases and not among its training cases). So no cascade input was made by a
network that saw the case, and training and validation cases are treated alike.
"""
from pathlib import Path

from boxunet.errors import BoxunetError
from boxunet.io.atomic import read_json
from boxunet.paths import model_folder_name
from boxunet.preprocessing.grid_labels import store_raw_label_maps
from boxunet.preprocessing.previous_stage import read_previous_stage
from boxunet.training.data.dataset import PreprocessedCases
from boxunet.training.distributed import ProcessGroupInfo, barrier
from boxunet.training.setup import TrainingSetup


def held_out_predictions(folder: Path, file_ending: str) -> dict[str, Path]:
    """Case id -> validation prediction, over the finished folds of model ``folder``, each case taken only
    from a fold that did not train on it. A fold counts only when its ``checkpoint_final.pth`` is newer than
    its ``debug.json`` (written when a run starts: a fold being retrained, perhaps on another split, does
    not count) and a prediction only when it is newer than that checkpoint."""
    found = {}
    for fold in sorted(folder.glob("fold_*")):
        debug, final = fold / "debug.json", fold / "checkpoint_final.pth"
        if not final.is_file() or not debug.is_file() or final.stat().st_mtime_ns < debug.stat().st_mtime_ns:
            continue
        record = read_json(debug)
        trained_on = set(record["train_cases"])
        for case_id in record["val_cases"]:
            prediction = fold / "validation" / f"{case_id}{file_ending}"
            if case_id not in trained_on and prediction.is_file() and \
                    prediction.stat().st_mtime_ns >= final.stat().st_mtime_ns:
                found.setdefault(case_id, prediction)
    return found


def previous_stage_files(dataset_results: Path, trainer: str, plans_name: str, configuration: str,
                         previous_stage: str, case_ids: list[str], file_ending: str,
                         splits: list[dict]) -> dict[str, Path]:
    """The previous stage's held-out prediction of every case in ``case_ids``, from the model
    ``<trainer>__<plans>__<previous_stage>`` of the dataset's results folder, trained on the same ``splits``.

    Raises a BoxunetError naming the missing cases and the folds to train first.
    """
    folder = Path(dataset_results) / model_folder_name(trainer, plans_name, previous_stage)
    found = held_out_predictions(folder, file_ending)
    missing = [case_id for case_id in case_ids if case_id not in found]
    if not missing:
        return {case_id: found[case_id] for case_id in case_ids}
    folds = sorted({str(index) for index, split in enumerate(splits) for case_id in missing if case_id in split["val"]})
    dataset_id = folder.parent.name[len("Dataset"):len("Dataset") + 3]
    commands = "; ".join(f"boxunet_train {dataset_id} {previous_stage} {fold} -tr {trainer}" for fold in folds)
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    raise BoxunetError(f"{configuration} is a cascade: it needs the {previous_stage} cross-validation predictions "
                       f"of {folder}, which has none for {len(missing)} case(s) ({shown}). Train "
                       f"{previous_stage} fold(s) {', '.join(folds) or '(none of the splits holds them out)'} first"
                       + (f": {commands}" if commands else ""))


def previous_stage_store(setup: TrainingSetup, trainer: str, file_ending: str, group: ProcessGroupInfo) -> Path:
    """The previous stage's held-out predictions of the fold's cases (``previous_stage_files``) brought onto the
    configuration's grid as a target store, made once by the main process (the others wait); its folder."""
    plans, configuration = setup.plans, setup.configuration
    cases = setup.train_cases + setup.val_cases
    files = previous_stage_files(setup.folders.results, trainer, plans.plans_name, configuration.name,
                                 configuration.previous_stage, cases, file_ending, setup.splits)
    folder = (setup.folders.preprocessed / "previous_stage" /
              f"{model_folder_name(trainer, plans.plans_name, configuration.previous_stage)}"
              f"_on_{configuration.data_identifier}")
    if group.is_main:
        store_raw_label_maps(folder, PreprocessedCases(setup.folders.preprocessed / configuration.data_identifier,
                                                       cases), files, plans, configuration,
                             lambda path, properties: read_previous_stage(path, properties, plans, configuration))
    barrier(group)
    return folder
