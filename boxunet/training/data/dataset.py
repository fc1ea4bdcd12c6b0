"""The preprocessed cases of one configuration, opened memory-mapped on demand."""
from pathlib import Path

from boxunet.errors import BoxunetError
from boxunet.preprocessing.storage import load_case


class PreprocessedCases:
    """A list of preprocessed cases in ``folder`` (one configuration's data identifier folder).

    Every case is checked when the object is made, so a missing case fails before any worker starts.
    ``load`` opens a case lazily: slicing the returned blosc2 arrays decompresses only the chunks read.
    """

    def __init__(self, folder: Path, case_ids: list[str]):
        self.folder = Path(folder)
        self.case_ids = list(case_ids)
        if not self.case_ids:
            raise BoxunetError(f"folder {self.folder}: no cases given")
        missing = [case_id for case_id in self.case_ids if not self._is_stored(case_id)]
        if missing:
            raise self._missing(missing)

    def __len__(self) -> int:
        return len(self.case_ids)

    def load(self, case_id: str):
        """``(data, seg, properties)`` of one case: blosc2 arrays (c, z, y, x) float32 and (1, z, y, x) int8."""
        try:
            return load_case(self.folder, case_id)
        except FileNotFoundError:
            raise self._missing([case_id]) from None

    def _is_stored(self, case_id: str) -> bool:
        names = (f"{case_id}.b2nd", f"{case_id}_seg.b2nd", f"{case_id}.json")
        return all((self.folder / name).is_file() for name in names)

    def _missing(self, case_ids: list[str]) -> BoxunetError:
        shown = ", ".join(case_ids[:5]) + (f" and {len(case_ids) - 5} more" if len(case_ids) > 5 else "")
        return BoxunetError(f"folder {self.folder}: preprocessed case(s) {shown} missing or incomplete; "
                            "run boxunet_plan_and_preprocess -d DATASET -c CONFIGURATION for this configuration")
