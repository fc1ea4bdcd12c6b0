"""Cross-validation splits: ``splits_final.json`` in the preprocessed dataset folder.

Created once from a 5-fold KFold (shuffle, seed 12345) over the sorted case ids, then only read, so a
user can edit it. A ``splits_final.json`` placed in the raw dataset folder is copied over on creation.
Fold ``all`` trains on every case (and validates on every case); a fold beyond the file's length gets a
seeded random 80:20 split (seed 12345 + fold).
"""
from pathlib import Path

import numpy as np
from sklearn.model_selection import KFold

from boxunet.errors import BoxunetError
from boxunet.io.atomic import read_json, write_json

SPLITS_FILE = "splits_final.json"
NUM_FOLDS = 5
SPLIT_SEED = 12345


def create_splits(case_ids: list[str], num_folds: int = NUM_FOLDS, seed: int = SPLIT_SEED) -> list[dict]:
    """KFold splits over the sorted case ids."""
    ids = np.array(sorted(case_ids))
    if len(ids) < num_folds:
        raise BoxunetError(f"{len(ids)} cases cannot be split into {num_folds} folds; train fold 'all' instead")
    folds = KFold(n_splits=num_folds, shuffle=True, random_state=seed)
    return [{"train": ids[train].tolist(), "val": ids[val].tolist()} for train, val in folds.split(ids)]


def load_or_create_splits(preprocessed_folder: Path, case_ids: list[str], raw_folder: Path | None = None) -> list[dict]:
    """Read ``splits_final.json``, creating it first (or copying it from the raw folder) if missing."""
    path = Path(preprocessed_folder) / SPLITS_FILE
    if not path.is_file():
        raw_splits = Path(raw_folder) / SPLITS_FILE if raw_folder else None
        splits = read_json(raw_splits) if raw_splits and raw_splits.is_file() else create_splits(case_ids)
        write_json(splits, path)
    splits = read_json(path)
    if not isinstance(splits, list) or not all(isinstance(s, dict) and "train" in s and "val" in s for s in splits):
        raise BoxunetError(f"file {path}: must be a list of {{\"train\": [...], \"val\": [...]}}; fix or delete it")
    return splits


def fold_cases(splits: list[dict], fold: int | str, case_ids: list[str], source: str = SPLITS_FILE) -> tuple[list[str], list[str]]:
    """The (training, validation) case ids of ``fold``; every id must exist in ``case_ids``."""
    available = set(case_ids)
    if fold == "all":
        return sorted(case_ids), sorted(case_ids)
    fold = int(fold)
    if fold < len(splits):
        train, val = list(splits[fold]["train"]), list(splits[fold]["val"])
    else:
        rng = np.random.RandomState(SPLIT_SEED + fold)
        ids = np.array(sorted(case_ids))
        chosen = rng.choice(len(ids), int(len(ids) * 0.8), replace=False)
        train = ids[chosen].tolist()
        val = [i for i in ids.tolist() if i not in set(train)]
    unknown = sorted((set(train) | set(val)) - available)
    if unknown:
        raise BoxunetError(f"{source}: fold {fold} names cases that are not preprocessed: {unknown[:5]}; "
                           "fix the splits file or rerun boxunet_plan_and_preprocess")
    if not train or not val:
        raise BoxunetError(f"{source}: fold {fold} has {len(train)} training and {len(val)} validation cases; "
                           "both must be non-empty")
    return train, val
