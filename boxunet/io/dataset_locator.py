"""Find a dataset folder from an id (``1`` -> ``Dataset001_*``) or its full name."""
import re
from pathlib import Path

from boxunet.errors import BoxunetError

_NAME_PATTERN = re.compile(r"^Dataset(\d{3})_[A-Za-z0-9_\-]+$")


def dataset_folder_name(identifier: str | int, root: Path) -> str:
    """Return the ``DatasetXXX_Name`` folder name in ``root`` that ``identifier`` denotes."""
    text = str(identifier).strip()
    if _NAME_PATTERN.match(text):
        return text
    if not text.isdigit():
        raise BoxunetError(f"dataset {text!r}: give a number (e.g. 1) or a folder name like Dataset001_Name")
    prefix = f"Dataset{int(text):03d}_"
    matches = sorted(p.name for p in Path(root).glob(prefix + "*") if p.is_dir()) if Path(root).is_dir() else []
    if not matches:
        raise BoxunetError(f"dataset {text}: no folder {prefix}* in {root}")
    if len(matches) > 1:
        raise BoxunetError(f"dataset {text}: several folders match in {root}: {matches}; use the full name")
    return matches[0]


def find_dataset_folder(identifier: str | int, root: Path) -> Path:
    """Return the existing folder of dataset ``identifier`` inside ``root``."""
    folder = Path(root) / dataset_folder_name(identifier, root)
    if not folder.is_dir():
        raise BoxunetError(f"dataset {identifier}: folder {folder} does not exist")
    return folder


def dataset_id_of(name: str) -> int:
    """The number of a ``DatasetXXX_Name`` folder name."""
    match = _NAME_PATTERN.match(name)
    if not match:
        raise BoxunetError(f"dataset {name!r}: a dataset folder is named like Dataset001_Name")
    return int(match.group(1))
