"""Scoring case-level classes (dataset.json ``"case_classification"``) predicted by a model with a
classification head: accuracy, recall per class and the confusion table. A case the model left without a
class (no patch voted) counts as wrong and is listed under ``"none"``."""
from pathlib import Path

from boxunet.io.atomic import read_json

REPORT_FILE = "prediction_report.json"  # written by boxunet_predict (and validation) next to the predictions


def predicted_case_classes(prediction_folder: Path) -> dict[str, str | None]:
    """Case id -> predicted class, from the folder's prediction report (empty when it has none)."""
    report = Path(prediction_folder) / REPORT_FILE
    details = read_json(report).get("details", {}) if report.is_file() else {}
    return {case: entry["case_class"] for case, entry in details.items() if "case_class" in entry}


def classification_summary(reference: dict[str, str], predicted: dict[str, str | None], classes: list[str],
                           case_ids: list[str]) -> dict:
    """Accuracy, recall per class and confusion (reference -> predicted -> count) over the ``case_ids`` that have
    a reference class and a prediction."""
    cases = [c for c in case_ids if c in reference and c in predicted]
    confusion = {truth: {guess: 0 for guess in classes + ["none"]} for truth in classes}
    for case in cases:
        confusion[reference[case]][predicted[case] or "none"] += 1
    correct = sum(confusion[c][c] for c in classes)
    recall = {c: confusion[c][c] / sum(confusion[c].values()) if sum(confusion[c].values()) else float("nan")
              for c in classes}
    return {"cases": len(cases), "accuracy": correct / len(cases) if cases else float("nan"), "recall": recall,
            "confusion": confusion}
