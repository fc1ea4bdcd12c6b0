"""The raw dataset description (``dataset.json``), nnU-Net v2 compatible plus ``box_labels``."""
import re
from dataclasses import dataclass, field
from pathlib import Path

from boxunet.errors import BoxunetError
from boxunet.io.atomic import read_user_json
from boxunet.io.labels import Labels


@dataclass
class CaseClassification:
    """A case-level attribute to classify (``"case_classification"`` in dataset.json), e.g. benign/malignant.

    ``label`` is the structure the class belongs to (patches holding it vote for the case's class);
    ``cases`` maps training case ids to their class (cases not listed are not used for the class loss).
    """

    name: str
    classes: list[str]
    label: int
    cases: dict[str, str]

    def to_json(self) -> dict:
        return {"name": self.name, "classes": list(self.classes), "label": self.label, "cases": dict(self.cases)}


@dataclass
class DatasetDescription:
    """What ``dataset.json`` says about a dataset."""

    channel_names: dict[int, str]
    labels: dict[str, int | tuple[int, ...]]
    num_training: int
    file_ending: str
    box_labels: list[int] = field(default_factory=list)
    box_margins: dict[int, int] = field(default_factory=dict)  # voxels a label's boxes extend past it; 0: tight
    regions_class_order: list[int] | None = None
    case_classification: CaseClassification | None = None
    extra: dict = field(default_factory=dict)

    @property
    def tight_boxes(self) -> bool:
        """Whether every box touches its object on all sides (no ``box_margins`` above 0)."""
        return not any(self.box_margins.values())

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    @property
    def label_set(self) -> Labels:
        """What the labels stand for (values, regions, outputs; boxunet.io.labels)."""
        return Labels.from_mapping(self.labels, self.regions_class_order, self.box_labels)

    def to_json(self) -> dict:
        data = dict(self.extra)
        data.update({
            "channel_names": {str(k): v for k, v in self.channel_names.items()},
            "labels": {k: list(v) if isinstance(v, tuple) else v for k, v in self.labels.items()},
            "numTraining": self.num_training,
            "file_ending": self.file_ending,
        })
        if self.box_labels:
            data["box_labels"] = list(self.box_labels)
        if self.box_margins:
            data["box_margins"] = {str(k): v for k, v in self.box_margins.items()}
        if self.regions_class_order is not None:
            data["regions_class_order"] = list(self.regions_class_order)
        if self.case_classification is not None:
            data["case_classification"] = self.case_classification.to_json()
        return data


_KNOWN_KEYS = {"channel_names", "modality", "labels", "numTraining", "file_ending", "box_labels", "box_margins", "regions_class_order",
               "case_classification"}


def parse_case_classification(data, labels: dict, fail) -> CaseClassification | None:
    """The ``"case_classification"`` entry (None when absent); ``fail(message)`` raises for a bad one."""
    if data is None:
        return None
    example = ('e.g. {"name": "malignancy", "classes": ["benign", "malignant"], "label": 2, '
               '"cases": {"case_00000": "malignant"}}')
    if not isinstance(data, dict):
        fail(f'"case_classification" must be an object, {example}')
    classes = data.get("classes")
    if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) and c for c in classes)
            and len(set(classes)) == len(classes)):
        fail(f'"case_classification" needs "classes": two or more distinct names, {example}')
    by_name = {str(name).lower(): value for name, value in labels.items()}
    label = data.get("label", by_name.get("tumor"))
    plain = {v for v in labels.values() if isinstance(v, int) and v != 0}
    if not isinstance(label, int) or isinstance(label, bool) or label not in plain:
        fail(f'"case_classification" needs "label": the label value its classes belong to (one of {sorted(plain)}); '
             f"got {label!r}")
    cases = data.get("cases", {})
    if not isinstance(cases, dict):
        fail(f'"case_classification" "cases" must map case ids to classes, {example}')
    unknown = {case: value for case, value in cases.items() if value not in classes}
    if unknown:
        fail(f'"case_classification": case(s) {dict(list(unknown.items())[:5])} have classes not in {classes}')
    return CaseClassification(str(data.get("name", "class")), list(classes), label, dict(cases))


def file_ending_problem(value) -> str | None:
    """Why ``value`` is not a plain file ending (dot-separated letters, digits, _ or -: no folder, no ..), or None."""
    if isinstance(value, str) and re.fullmatch(r"(\.[A-Za-z0-9_-]+)+", value):
        return None
    return f'"file_ending" must be a plain file ending such as ".nii.gz" (no "/" or ".."); got {value!r}'


def is_int(value) -> bool:
    """An int that is not a bool (JSON true and false are ints to Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def parse_dataset_json(data: dict, source: str = "dataset.json") -> DatasetDescription:
    """Validate a dataset.json dictionary and turn it into a DatasetDescription."""
    def fail(message: str):
        raise BoxunetError(f"file {source}: {message}")

    if not isinstance(data, dict):
        fail(f'must be a JSON object ({{"channel_names": ..., "labels": ...}}), not a {type(data).__name__}')
    channels = data.get("channel_names", data.get("modality"))
    if not isinstance(channels, dict) or not channels:
        fail('needs "channel_names", e.g. {"0": "CT"}')
    try:
        channel_names = {int(k): str(v) for k, v in channels.items()}
    except ValueError:
        fail(f'"channel_names" keys must be channel numbers "0", "1", ...; got {list(channels)}')
    if sorted(channel_names) != list(range(len(channel_names))):
        fail(f'"channel_names" keys must be 0..{len(channel_names) - 1}; got {sorted(channel_names)}')

    raw_labels = data.get("labels")
    if not isinstance(raw_labels, dict) or not raw_labels:
        fail('needs "labels", e.g. {"background": 0, "kidney": 1}')
    labels: dict[str, int | tuple[int, ...]] = {}
    for name, value in raw_labels.items():
        if isinstance(value, (list, tuple)):
            if not value or not all(is_int(v) for v in value):
                fail(f'label {name!r} region must be a non-empty list of ints; got {value!r}')
            labels[name] = tuple(value) if len(value) > 1 else value[0]
        elif is_int(value):
            labels[name] = value
        else:
            fail(f"label {name!r} must be an int or a list of ints (a region); got {value!r}")
    named: dict[int, str] = {}
    for name, value in labels.items():
        if isinstance(value, int) and named.setdefault(value, name) != name:
            fail(f"labels {named[value]!r} and {name!r} both have the value {value}; give each label its own value")
    if labels.get("background", 0) != 0:
        fail(f'"background" must have the value 0; got {labels["background"]!r}')
    description = DatasetDescription(channel_names, labels, 0, "")
    values = description.label_set.values
    if values != list(range(len(values))):
        fail(f"label values must be consecutive ints starting at 0 (background); got {values}")

    num_training = data.get("numTraining")
    if not is_int(num_training) or num_training < 0:
        fail(f'"numTraining" must be a non-negative int; got {num_training!r}')
    file_ending = data.get("file_ending")
    if problem := file_ending_problem(file_ending):
        fail(problem)

    box_labels = data.get("box_labels", [])
    if not isinstance(box_labels, list) or not all(is_int(v) for v in box_labels):
        fail(f'"box_labels" must be a list of label values; got {box_labels!r}')
    undeclared = [v for v in box_labels if v not in values or v == 0]
    if undeclared:
        fail(f'"box_labels" {undeclared} are not declared foreground labels {values[1:]}')

    box_margins = data.get("box_margins", {})
    if not isinstance(box_margins, dict) or not all(
            str(k).isdigit() and int(k) in box_labels and is_int(v) and v >= 0 for k, v in box_margins.items()):
        fail(f'"box_margins" must map box labels to the voxels their boxes extend past the object (0: tight), '
             f'e.g. {{"2": 0}}; got {box_margins!r}')

    regions_class_order = data.get("regions_class_order")
    if description.label_set.region_based and regions_class_order is None:
        fail('labels define regions, so "regions_class_order" is required (the label written for each region, '
             'in the order regions are painted)')

    foreground = description.label_set.foreground_entries
    if regions_class_order is not None and len(regions_class_order) != len(foreground):
        fail(f'"regions_class_order" has {len(regions_class_order)} entries but labels define '
             f"{len(foreground)} foreground labels/regions; give one label per region")
    description.num_training = num_training
    description.file_ending = file_ending
    description.box_labels = sorted(box_labels)
    description.box_margins = {int(k): v for k, v in box_margins.items()}
    description.regions_class_order = list(regions_class_order) if regions_class_order is not None else None
    description.case_classification = parse_case_classification(data.get("case_classification"), labels, fail)
    description.extra = {k: v for k, v in data.items() if k not in _KNOWN_KEYS}
    return description


def load_dataset_json(dataset_folder: Path) -> DatasetDescription:
    """Read and validate ``dataset_folder/dataset.json``."""
    path = Path(dataset_folder) / "dataset.json"
    if not path.is_file():
        raise BoxunetError(f"file {path}: missing; every dataset folder needs a dataset.json")
    return parse_dataset_json(read_user_json(path), str(path))
