"""The KiTS19 composite score: mean of Dice(kidney and masses) and Dice(tumor).

"Kidney and masses" is every KiTS label (kidney + tumor, and cyst for KiTS21/23), i.e. all foreground.
When a term is NaN (reference and prediction both empty) the composite is the mean of the other term.
"""

KITS_LABEL_NAMES = ("kidney", "tumor", "cyst")


def _is_label(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def kits_labels(labels: dict) -> dict | None:
    """The values of kidney, tumor (and cyst) when ``labels`` (dataset.json "labels", names compared
    case-insensitively) are KiTS's: kidney and tumor as plain integer labels; otherwise None."""
    by_name = {str(name).lower(): value for name, value in labels.items()}
    if not all(_is_label(by_name.get(name)) for name in ("kidney", "tumor")):
        return None
    return {name: by_name[name] for name in KITS_LABEL_NAMES if _is_label(by_name.get(name))}


def kits_composite_regions(kits: dict) -> list[int | tuple[int, ...]]:
    """The two regions the composite averages the Dice of: kidney and masses, then tumor."""
    return [tuple(sorted(kits.values())), kits["tumor"]]
