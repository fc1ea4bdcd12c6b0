"""Find the cases of a raw dataset: one image file per channel, an optional label map and box file."""
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from boxunet.errors import Problem
from boxunet.io.dataset_json import DatasetDescription
from boxunet.io.stamps import file_stamp

SAFE_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class CaseFiles:
    """The files of one case. ``images`` holds one path per channel, in channel order."""

    case_id: str
    images: tuple[Path, ...]
    label: Path | None = None
    boxes: Path | None = None

    def to_json(self) -> dict:
        return {"case_id": self.case_id, "images": [str(p) for p in self.images],
                "label": str(self.label) if self.label else None, "boxes": str(self.boxes) if self.boxes else None}

    def input_stamps(self) -> dict:
        """The stamps (boxunet.io.stamps) of the case's files: what a step made from the case keys its reuse on."""
        return {"images": [file_stamp(p) for p in self.images], "label": file_stamp(self.label),
                "boxes": file_stamp(self.boxes)}


def case_id_problem(case_id: str) -> str | None:
    """Say why ``case_id`` is not safe as a file name, or return None."""
    if not SAFE_CASE_ID.match(case_id) or len(case_id) > 200:
        return (f"case id {case_id!r} is not safe as a file name: use letters, digits, '_', '-' and '.', "
                "starting with a letter or digit")
    return None


def safe_cases(channels_by_case: dict[str, dict[int, Path]], problems: list[Problem]):
    """(case id, channel files) of ``channels_by_case`` in order; a case whose id is unsafe is reported in
    ``problems`` and left out."""
    for case_id, channels in sorted(channels_by_case.items()):
        reason = case_id_problem(case_id)
        if reason:
            problems.append(Problem(case_id, str(channels[min(channels)]), reason))
            continue
        yield case_id, channels


def group_channel_files(folder: Path, file_ending: str, num_channels: int,
                        allow_unsuffixed_single_channel: bool = False) -> tuple[dict[str, dict[int, Path]], list[Problem]]:
    """Group ``<case>_<XXXX><ending>`` files of ``folder`` by case; return {case: {channel: path}} and problems.

    With ``allow_unsuffixed_single_channel`` and one channel, ``<case><ending>`` counts as channel 0.
    """
    pattern = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})" + re.escape(file_ending) + r"$")
    channels_by_case: dict[str, dict[int, Path]] = defaultdict(dict)
    problems = []
    for path in sorted(Path(folder).iterdir()):
        if path.name.startswith(".") or not path.name.endswith(file_ending):
            continue
        match = pattern.match(path.name)
        if match:
            case_id, channel = match.group("case"), int(match.group("channel"))
        elif allow_unsuffixed_single_channel and num_channels == 1:
            case_id, channel = path.name[: -len(file_ending)], 0
        else:
            problems.append(Problem(path.name[: -len(file_ending)], str(path),
                                    f"file name must be <case>_<XXXX>{file_ending} with a 4-digit channel number"))
            continue
        if channel in channels_by_case[case_id]:
            problems.append(Problem(case_id, str(path), f"two files for channel {channel}: "
                                    f"{channels_by_case[case_id][channel].name} and {path.name}"))
            continue
        channels_by_case[case_id][channel] = path
    for case_id, channels in sorted(channels_by_case.items()):
        missing = [c for c in range(num_channels) if c not in channels]
        extra = sorted(c for c in channels if c >= num_channels)
        if missing:
            expected = f"{case_id}_{missing[0]:04d}{file_ending}"
            problems.append(Problem(case_id, str(Path(folder) / expected),
                                    f"channel(s) {missing} missing: dataset.json declares {num_channels} channel(s)"))
        if extra:
            problems.append(Problem(case_id, str(channels[extra[0]]),
                                    f"channel(s) {extra} present but dataset.json declares only {num_channels}"))
    return dict(channels_by_case), problems


def list_training_cases(dataset_folder: Path, description: DatasetDescription) -> tuple[list[CaseFiles], list[Problem]]:
    """List the training cases of a raw dataset with every problem of naming or missing files."""
    dataset_folder = Path(dataset_folder)
    images_folder = dataset_folder / "imagesTr"
    labels_folder = dataset_folder / "labelsTr"
    boxes_folder = dataset_folder / "boxesTr"
    ending = description.file_ending
    if not images_folder.is_dir():
        return [], [Problem("-", str(images_folder), "imagesTr folder is missing")]
    channels_by_case, problems = group_channel_files(images_folder, ending, description.num_channels)

    dense_labels = description.label_set.dense_values
    labels_required = bool(dense_labels) or not description.box_labels
    boxes_required = bool(description.box_labels)
    seen_lowercase: dict[str, str] = {}
    cases = []
    for case_id, channels in safe_cases(channels_by_case, problems):
        if case_id.lower() in seen_lowercase:
            problems.append(Problem(case_id, str(channels[min(channels)]),
                                    f"case id is not unique: it differs from {seen_lowercase[case_id.lower()]!r} only by case"))
            continue
        seen_lowercase[case_id.lower()] = case_id
        label = labels_folder / f"{case_id}{ending}"
        boxes = boxes_folder / f"{case_id}.json"
        if labels_required and not label.is_file():
            problems.append(Problem(case_id, str(label), "label file is missing (labelsTr/<case><ending>)"))
        if boxes_required and not boxes.is_file():
            problems.append(Problem(case_id, str(boxes), 'box file is missing; write {"boxes": []} for a case without boxes'))
        images = tuple(channels[c] for c in range(description.num_channels) if c in channels)
        cases.append(CaseFiles(case_id, images, label if label.is_file() else None, boxes if boxes.is_file() else None))

    known = set(channels_by_case)
    for folder, suffix in ((labels_folder, ending), (boxes_folder, ".json")):
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.name.endswith(suffix) and not path.name.startswith(".") and path.name[: -len(suffix)] not in known:
                    problems.append(Problem(path.name[: -len(suffix)], str(path), "has no image in imagesTr"))
    if not channels_by_case:
        problems.append(Problem("-", str(images_folder), f"no images ending in {ending} found"))
    elif description.num_training != len(channels_by_case):
        problems.append(Problem("-", str(dataset_folder / "dataset.json"),
                                f"numTraining is {description.num_training} but imagesTr holds {len(channels_by_case)} cases"))
    complete = [c for c in cases if len(c.images) == description.num_channels]
    return complete, problems
