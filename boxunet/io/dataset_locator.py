"""Find a dataset folder from an id (``1`` -> ``Dataset001_*``) or its full name; a dataset's folders."""
import re
from dataclasses import dataclass
from pathlib import Path

from boxunet.errors import BoxunetError
from boxunet.paths import preprocessed_root, raw_root, results_root

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


@dataclass(frozen=True)
class DatasetFolders:
    """The folders of one dataset, resolved once: the raw dataset (None where this machine lacks it), its
    preprocessed folder and its results folder (which holds the model folders)."""

    name: str
    raw: Path | None
    preprocessed: Path
    results: Path

    @classmethod
    def named(cls, name: str) -> "DatasetFolders":
        """The folders of the dataset folder name ``name`` in the three roots."""
        raw = raw_root() / name
        return cls(name, raw if raw.is_dir() else None, preprocessed_root() / name, results_root() / name)

    def require_raw(self, purpose: str) -> Path:
        """The raw dataset folder; a clear error saying what needs it when it is missing."""
        if self.raw is None:
            raise BoxunetError(f"{purpose} needs the raw dataset {raw_root() / self.name}; set boxunet_raw to the "
                               "folder holding it")
        return self.raw
