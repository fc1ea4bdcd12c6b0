"""Pictures of boxes and masks, to judge pseudo masks by eye.

``write_box_picture`` draws one PNG per case: a row per box (the largest first, at most ``MAX_BOXES``), with
the three slices through the box's centre (along z, y and x), each cropped to the box and some context. The
image (first channel, grey, windowed to its 1st..99th percentile in the crop) carries the box (yellow) and
the contours of every mask of the box's label, one colour per mask, the reference (where known) dashed white.
"""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from boxunet.io.boxes import Box  # noqa: E402

MAX_BOXES = 4
MASK_COLOURS = ("red", "cyan", "lime", "orange")
AXIS_NAMES = ("z", "y", "x")


def _crop(box: Box, shape) -> tuple[slice, ...]:
    """The box with half its size (at least 4 voxels) of context per side, within the image."""
    context = [max(4, (high - low) // 2) for low, high in zip(box.min, box.max)]
    return tuple(slice(max(0, low - c), min(size, high + c)) for low, high, c, size in zip(box.min, box.max, context,
                                                                                       shape))


def _panel(axes, image: np.ndarray, spacing, box: Box, masks: dict[str, np.ndarray], reference, axis: int) -> None:
    """One slice through the centre of ``box`` along ``axis``: image, box and the contours of the masks."""
    crop = _crop(box, image.shape)
    centre = (box.min[axis] + box.max[axis] - 1) // 2
    view = list(crop)
    view[axis] = centre
    view = tuple(view)
    shown = [a for a in range(3) if a != axis]
    picture = image[view]
    low, high = np.percentile(picture, (1, 99)) if picture.size else (0, 1)
    axes.imshow(picture, cmap="gray", vmin=low, vmax=high if high > low else low + 1, interpolation="nearest",
                aspect=spacing[shown[0]] / spacing[shown[1]])
    rows, columns = (box.min[a] - crop[a].start for a in shown)
    height, width = (box.max[a] - box.min[a] for a in shown)
    axes.add_patch(Rectangle((columns - 0.5, rows - 0.5), width, height, fill=False, edgecolor="yellow", linewidth=1))
    outlines = [(mask, colour, "solid") for mask, colour in zip(masks.values(), MASK_COLOURS)]
    if reference is not None:
        outlines.append((reference, "white", "dashed"))
    for mask, colour, style in outlines:
        section = mask[view] == box.label
        if min(section.shape) >= 2 and section.any() and not section.all():
            axes.contour(section, levels=[0.5], colors=colour, linewidths=1, linestyles=style)
    axes.set_title(f"{AXIS_NAMES[axis]} = {centre}", fontsize=7)
    axes.set_xticks([])
    axes.set_yticks([])


def picture_path(folder: Path, case_id: str) -> Path:
    """Where the picture of a case whose masks are in ``folder`` goes: ``folder/pictures/<case>.png``."""
    return Path(folder) / "pictures" / f"{case_id}.png"


def write_box_picture(path: Path, image: np.ndarray, spacing, boxes: list[Box], masks: dict[str, np.ndarray],
                      reference: np.ndarray | None = None, label_names: dict[int, str] | None = None) -> None:
    """A PNG at ``path`` of ``image`` (C, z, y, x), its ``boxes`` and the label maps ``masks`` (name -> label map,
    same grid), with ``reference`` (a label map holding the box labels) dashed; nothing for a case without boxes."""
    if not boxes:
        return
    shown = sorted(boxes, key=lambda b: -int(np.prod(b.size)))[:MAX_BOXES]
    figure = Figure(figsize=(6, 2.1 * len(shown) + 0.4), dpi=80)
    grid = figure.subplots(len(shown), 3, squeeze=False)
    for row, box in zip(grid, shown):
        for axis, axes in enumerate(row):
            _panel(axes, image[0], spacing, box, masks, reference, axis)
        name = (label_names or {}).get(box.label, f"label {box.label}")
        row[0].set_ylabel(f"{name} {list(box.min)}..{list(box.max)}", fontsize=6)
    handles = [Line2D([], [], color=colour, label=name) for name, colour in zip(masks, MASK_COLOURS)]
    handles.append(Line2D([], [], color="yellow", label="box"))
    if reference is not None:
        handles.append(Line2D([], [], color="white", linestyle="dashed", label="reference"))
    more = f" (+{len(boxes) - len(shown)} smaller boxes)" if len(boxes) > len(shown) else ""
    figure.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=7, frameon=False,
                  title=f"{Path(path).stem}{more}", title_fontsize=7)
    figure.subplots_adjust(left=0.05, right=0.99, bottom=0.01, top=1 - 0.5 / figure.get_figheight(), wspace=0.05,
                           hspace=0.2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp_{path.name}")
    figure.savefig(temporary, format="png", facecolor="dimgray")
    temporary.replace(path)
