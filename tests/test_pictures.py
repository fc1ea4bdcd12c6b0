"""Pictures of boxes and masks (boxunet.evaluation.pictures): one PNG per case, a row per box."""
import matplotlib.image
import numpy as np

from boxunet.evaluation.pictures import MAX_BOXES, picture_path, write_box_picture
from boxunet.io.boxes import Box


def _ball(shape, centre, radius) -> np.ndarray:
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius ** 2


def _pixels(path, rgb) -> int:
    """How many pixels of the PNG at ``path`` are within 0.2 of the colour ``rgb``."""
    picture = matplotlib.image.imread(path)[..., :3]
    return int(np.all(np.abs(picture - np.asarray(rgb)) < 0.2, axis=-1).sum())


def test_a_row_per_box_with_the_masks_drawn(tmp_path):
    image = np.random.default_rng(0).normal(size=(1, 24, 40, 40)).astype(np.float32)
    labels = np.zeros((24, 40, 40), np.uint8)
    labels[_ball(labels.shape, (8, 10, 10), 4)] = 2
    labels[_ball(labels.shape, (16, 28, 28), 5)] = 1
    image[0] += 3 * (labels > 0)
    boxes = [Box(2, (4, 6, 6), (13, 15, 15)), Box(1, (11, 23, 23), (22, 34, 34))]
    path = picture_path(tmp_path / "stage1", "case_1")
    write_box_picture(path, image, (2.0, 1.0, 1.0), boxes, {"stage 1": labels}, labels, {1: "kidney", 2: "tumor"})
    assert path == tmp_path / "stage1" / "pictures" / "case_1.png"
    # 6 x (2.1 x 2 rows + 0.4) inches at 80 dots per inch
    assert matplotlib.image.imread(path).shape[:2] == (368, 480)
    assert _pixels(path, (1, 0, 0)) > 50 and _pixels(path, (1, 1, 0)) > 50  # the red mask contour, the yellow box
    assert not list(path.parent.glob(".tmp_*"))


def test_many_boxes_show_the_largest_and_no_boxes_no_picture(tmp_path):
    image = np.zeros((1, 30, 30, 30), np.float32)
    boxes = [Box(1, (i, i, i), (i + 2 + i // 5, i + 3, i + 3)) for i in range(0, 24, 4)]
    write_box_picture(tmp_path / "many.png", image, (1, 1, 1), boxes, {"stage 1": np.zeros((30, 30, 30), np.uint8)})
    assert matplotlib.image.imread(tmp_path / "many.png").shape[:2] == (int(80 * (2.1 * MAX_BOXES + 0.4)), 480)
    write_box_picture(tmp_path / "none.png", image, (1, 1, 1), [], {"stage 1": np.zeros((30, 30, 30), np.uint8)})
    assert not (tmp_path / "none.png").exists()
