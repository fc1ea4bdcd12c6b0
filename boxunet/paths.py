"""The three data roots of boxunet, and the names of the files and folders boxunet makes in them.

Each root comes from an environment variable (``boxunet_raw``, ``boxunet_preprocessed``,
``boxunet_results``). When a variable is unset, the root defaults to a folder inside
``./boxunet_data/`` of the current working directory, and this is announced once on stderr.
Nothing else in boxunet reads the environment for paths.
"""
import os
import re
import sys
from pathlib import Path

from boxunet.errors import BoxunetError

DEFAULT_BASE_FOLDER = "boxunet_data"
PLANS_FILE_NAME = "boxunet_plans.json"  # in the preprocessed dataset folder, model folders and prediction folders
DATASET_JSON = "dataset.json"
_ROOT_VARIABLES = {"raw": "boxunet_raw", "preprocessed": "boxunet_preprocessed", "results": "boxunet_results"}
_announced: set[str] = set()
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def _root(kind: str) -> Path:
    variable = _ROOT_VARIABLES[kind]
    value = os.environ.get(variable)
    if value:
        return Path(value)
    default = Path.cwd() / DEFAULT_BASE_FOLDER / kind
    if variable not in _announced:
        _announced.add(variable)
        print(f"boxunet: {variable} is not set, using {default}", file=sys.stderr)
    return default


def raw_root() -> Path:
    """Folder holding the raw datasets (``DatasetXXX_Name/``)."""
    return _root("raw")


def preprocessed_root() -> Path:
    """Folder holding fingerprints, plans and preprocessed cases per dataset."""
    return _root("preprocessed")


def results_root() -> Path:
    """Folder holding trained models and their validation outputs per dataset."""
    return _root("results")


def checked_name(value: str, what: str) -> str:
    """``value`` when it is safe as (part of) a file name, e.g. a plans name; else a clear error: letters, digits,
    '_', '-' and '.', starting with a letter or digit, no '..' (a name never reaches outside its folder)."""
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value) or ".." in value:
        raise BoxunetError(f"{what} {value!r} is not a safe name: use letters, digits, '_', '-' and '.', starting "
                           "with a letter or digit (no '/' or '..')")
    return value


def model_folder_name(trainer: str, plans_name: str, configuration: str) -> str:
    """``<trainer>__<plans>__<configuration>``: a trained model's folder inside its dataset's results."""
    return "__".join(checked_name(value, what) for value, what in
                     ((trainer, "trainer"), (plans_name, "plans name"), (configuration, "configuration")))


def model_folder(dataset_name: str, trainer: str, plans_name: str, configuration: str) -> Path:
    """``boxunet_results/DatasetXXX/<trainer>__<plans>__<configuration>``."""
    return results_root() / dataset_name / model_folder_name(trainer, plans_name, configuration)
