"""What the label values of a dataset stand for: the one owner of label and region logic.

dataset.json ``labels`` maps names to an integer value, or (region-based training, nnU-Net's convention)
to a list of values that make one region; ``regions_class_order`` gives the label written for each
region. ``Labels`` is built once from them (``Plans.label_set``, ``DatasetDescription.label_set``) and
answers every question the stages ask: the values, the network's outputs, the class names of the
training log, what evaluation scores.
"""
from dataclasses import dataclass
from functools import cached_property

Region = int | tuple[int, ...]


def _as_region(value) -> Region:
    return tuple(value) if isinstance(value, (list, tuple)) else value


@dataclass(frozen=True)
class Labels:
    """A dataset's labels: ``names`` (name -> value or region), ``region_order`` (regions_class_order)
    and ``box_labels`` (the labels given as boxes)."""

    names: tuple[tuple[str, Region], ...]
    region_order: tuple[int, ...] | None = None
    box_labels: tuple[int, ...] = ()

    @classmethod
    def from_mapping(cls, labels: dict, region_order=None, box_labels=()) -> "Labels":
        """From dataset.json's (or the plans') ``labels``, ``regions_class_order`` and ``box_labels``."""
        return cls(tuple((str(name), _as_region(value)) for name, value in labels.items()),
                   None if region_order is None else tuple(region_order), tuple(box_labels or ()))

    @cached_property
    def values(self) -> list[int]:
        """Every integer label value, background included, in increasing order."""
        found = set()
        for _, value in self.names:
            found.update(value if isinstance(value, tuple) else (value,))
        return sorted(found)

    @property
    def foreground_values(self) -> list[int]:
        return [value for value in self.values if value != 0]

    @property
    def dense_values(self) -> list[int]:
        """The foreground values given as voxel labels (not as boxes)."""
        return [value for value in self.foreground_values if value not in self.box_labels]

    @cached_property
    def foreground_entries(self) -> list[tuple[str, Region]]:
        """(name, value or region) of every entry but the background, in order."""
        return [(name, value) for name, value in self.names if value not in (0, (0,))]

    @cached_property
    def regions(self) -> list[Region]:
        """The foreground regions in order (a region of one value stays an int, so summaries key it "2" as
        nnU-Net does); empty when no label is a region."""
        if not any(isinstance(value, tuple) for _, value in self.names):
            return []
        return [value for _, value in self.foreground_entries]

    @property
    def region_based(self) -> bool:
        """Whether the network predicts regions (sigmoid outputs) rather than labels (softmax)."""
        return bool(self.regions)

    @property
    def num_outputs(self) -> int:
        """The network's output channels: one per region, or one per label value (background included)."""
        return len(self.regions) if self.regions else len(self.values)

    @property
    def output_values(self) -> list[list[int]]:
        """Per output channel, the label values it stands for (its region's, or its one value)."""
        return [list(r) if isinstance(r, tuple) else [r] for r in self.regions or self.values]

    @property
    def value_names(self) -> dict[int, str]:
        """The name of every label value that has one of its own (regions left out)."""
        return {value: name for name, value in self.names if isinstance(value, int)}

    @property
    def class_names(self) -> list[str]:
        """The names of the foreground outputs (the training log's pseudo Dice columns)."""
        if self.regions:
            return [name for name, _ in self.foreground_entries]
        return [self.value_names.get(value, str(value)) for value in self.foreground_values]

    @property
    def evaluation_targets(self) -> list[Region]:
        """What evaluation scores: the foreground regions when labels define regions, else every label value
        (background included)."""
        return self.regions or list(self.values)
