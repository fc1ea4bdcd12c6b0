"""What the outputs of a prediction folder were made with, so that ``--continue`` keeps only what the same
model and settings made from unchanged inputs.

``prediction_settings.json`` records, when a prediction starts, what ``made_with`` returns (model folder,
configuration, folds, the stamps of their checkpoints, step size, mirroring, precision, postprocessing) and
``inputs`` (per case, the stamps of its image files and previous-stage segmentation; boxunet.io.stamps).
``--continue`` into a folder made with other settings is refused before anything is written (its outputs would
mix two models); with the same settings, a finished case is kept unless its input files changed since.
"""
import json
from pathlib import Path

from boxunet.errors import BoxunetError
from boxunet.inference.model import TrainedModel
from boxunet.io.atomic import read_json
from boxunet.io.cases import CaseFiles
from boxunet.io.stamps import file_stamp

SETTINGS_FILE = "prediction_settings.json"


def made_with(model: TrainedModel, step_size: float, mirroring: bool, precision: str,
              postprocessing: dict | None) -> dict:
    """What every output of a prediction depends on besides its own input files (as stored in JSON)."""
    record = {"model_folder": str(model.folder), "configuration": model.configuration.name, "folds": model.folds,
              "checkpoints": model.checkpoints, "step_size": step_size, "mirroring": mirroring,
              "precision": precision, "postprocessing": postprocessing}
    return json.loads(json.dumps(record))


def case_inputs(case: CaseFiles, previous_stage_file: Path | None) -> dict:
    """The stamps of what one case's prediction is made from."""
    return {"images": case.input_stamps()["images"], "previous_stage": file_stamp(previous_stage_file)}


def _describe(key: str, before, now) -> str:
    if key == "checkpoints":
        return f"checkpoints {sorted(before or {})} -> {sorted(now)} (another -chk, other folds, or retrained)"
    return f"{key} {before!r} -> {now!r}"


def kept_cases(output_folder: Path, settings: dict, inputs: dict[str, dict]) -> set[str]:
    """The cases whose stored inputs (in the folder's settings file) equal ``inputs``, after refusing a folder
    whose outputs were made with other ``settings`` (a BoxunetError naming the differences). A folder without
    such a record (or an older one) keeps nothing."""
    record_file = Path(output_folder) / SETTINGS_FILE
    if not record_file.is_file():
        return set()
    stored = read_json(record_file)
    if "checkpoints" not in stored:  # written before predictions recorded what they were made with
        return set()
    differences = [_describe(key, stored.get(key), value) for key, value in settings.items() if stored.get(key) != value]
    if differences:
        raise BoxunetError(f"--continue: the predictions in {output_folder} were made with other settings "
                           f"({'; '.join(differences)}); mixing them would mix two models. Predict into another "
                           "folder, or drop --continue to predict every case anew")
    stored_inputs = stored.get("inputs", {})
    return {case_id for case_id, stamps in inputs.items() if stored_inputs.get(case_id) == stamps}
