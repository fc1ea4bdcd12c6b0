"""What the outputs of a prediction folder were made with, so that ``--continue`` keeps only what the same
model and settings made from unchanged inputs.

``prediction_settings.json`` records, when a prediction starts, what ``made_with`` returns (model folder,
configuration, folds, the stamps of their checkpoints, step size, mirroring, precision, postprocessing) and
``inputs`` (per case, the stamps of its image files and previous-stage segmentation; boxunet.io.stamps).
``--continue`` into a folder made with other settings is refused before anything is written (its outputs would
mix two models); with the same settings, a finished case is kept unless its input files changed since.

A prediction split with ``--num-parts N --part-id I`` (each part predicts every N-th case of the sorted case
ids, possibly on another machine) records its part in ``prediction_settings.part_I_of_N.json`` and reports in
``prediction_report.part_I_of_N.json``; the whole prediction run afterwards keeps what the parts made with the
same settings, writes the folder's own record and report, and removes the parts'.
"""
import json
from pathlib import Path

from boxunet.errors import BoxunetError
from boxunet.evaluation.case_classification import REPORT_FILE
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


def part_suffix(part: tuple[int, int] | None) -> str:
    """``.part_I_of_N`` for part I of N of a prediction split with ``--num-parts``, else nothing."""
    return "" if part is None else f".part_{part[0]}_of_{part[1]}"


def settings_file(output_folder: Path, part: tuple[int, int] | None = None) -> Path:
    """The record of a whole prediction (``prediction_settings.json``) or of one part of it."""
    return Path(output_folder) / SETTINGS_FILE.replace(".json", f"{part_suffix(part)}.json")


def report_file(output_folder: Path, part: tuple[int, int] | None = None) -> Path:
    """The report of a whole prediction (``prediction_report.json``) or of one part of it."""
    return Path(output_folder) / REPORT_FILE.replace(".json", f"{part_suffix(part)}.json")


def part_files(output_folder: Path) -> list[Path]:
    """The records and reports that parts of a prediction (``--num-parts``) left in ``output_folder``."""
    return sorted(Path(output_folder).glob("prediction_*.part_*_of_*.json"))


def kept_cases(output_folder: Path, settings: dict, inputs: dict[str, dict], continuing: bool) -> set[str]:
    """The cases a prediction keeps from before: those whose stored inputs equal ``inputs`` in a record made with
    the same ``settings``. The records read are those of the parts of a split prediction and, when
    ``continuing`` (``--continue``), the folder's own. Continuing into a folder whose outputs were made with other
    settings is refused (a BoxunetError naming the differences); otherwise such records are ignored. A folder
    without records (or with older ones) keeps nothing."""
    records = ([settings_file(output_folder)] if continuing else []) + \
        [path for path in part_files(output_folder) if path.name.startswith("prediction_settings")]
    kept = set()
    for record_file in records:
        if not record_file.is_file():
            continue
        stored = read_json(record_file)
        if "checkpoints" not in stored:  # written before predictions recorded what they were made with
            continue
        differences = [_describe(key, stored.get(key), value) for key, value in settings.items()
                       if stored.get(key) != value]
        if differences and continuing:
            raise BoxunetError(f"--continue: the predictions in {output_folder} were made with other settings "
                               f"({'; '.join(differences)}; recorded in {record_file.name}); mixing them would mix "
                               "two models. Predict into another folder, or drop --continue to predict every case "
                               "anew")
        if not differences:
            stored_inputs = stored.get("inputs", {})
            kept |= {case_id for case_id, stamps in inputs.items() if stored_inputs.get(case_id) == stamps}
    return kept


def earlier_details(output_folder: Path, case_ids: set[str]) -> dict:
    """The per-case details (e.g. KiTS case classes) of ``case_ids`` in the reports already in ``output_folder``
    (the folder's own and its parts'), so a report of kept cases keeps them."""
    details = {}
    for report in [Path(output_folder) / REPORT_FILE] + [p for p in part_files(output_folder)
                                                         if p.name.startswith("prediction_report")]:
        if report.is_file():
            details.update({case: value for case, value in read_json(report).get("details", {}).items()
                            if case in case_ids})
    return details
