"""Boxes: raw grid -> preprocessed grid (transpose, crop, resample), labels -> boxes, boxes -> mask."""
import numpy as np
import pytest

from boxunet.io.boxes import Box, box_mask, boxes_from_label_map
from boxunet.preprocessing.box_mapping import box_to_preprocessed

# Raw image (z, y, x) = (8, 50, 60); transpose [2, 0, 1] -> transposed axes (x, z, y).
TRANSPOSE = [2, 0, 1]
CROP = [[16, 40], [0, 8], [5, 45]]        # in transposed order: x 16..40, z 0..8, y 5..45
SHAPE_AFTER_CROP = [24, 8, 40]


def test_box_with_transpose_crop_and_2x_upsampling():
    box = Box(2, (2, 10, 20), (5, 30, 28))  # raw z 2..5, y 10..30, x 20..28
    result = box_to_preprocessed(box, TRANSPOSE, CROP, SHAPE_AFTER_CROP, [48, 16, 80])
    # axis 0 = raw x: 20 - 16 = 4 .. 28 - 16 = 12, x2 -> 8 .. 24
    # axis 1 = raw z: 2 .. 5, x2 -> 4 .. 10
    # axis 2 = raw y: 10 - 5 = 5 .. 30 - 5 = 25, x2 -> 10 .. 50
    assert result == Box(2, (8, 4, 10), (24, 10, 50))


def test_box_with_non_integer_scales():
    box = Box(1, (2, 10, 20), (5, 30, 28))
    # axis 0 x1.5: 4 * 1.5 = 6, 12 * 1.5 = 18; axis 1 unchanged: 2 .. 5;
    # axis 2 x0.75: 5 * 0.75 = 3.75 -> floor 3, 25 * 0.75 = 18.75 -> ceil 19
    result = box_to_preprocessed(box, TRANSPOSE, CROP, SHAPE_AFTER_CROP, [36, 8, 30])
    assert result == Box(1, (6, 2, 3), (18, 5, 19))


def test_box_identity_mapping():
    box = Box(1, (1, 2, 3), (4, 5, 6))
    result = box_to_preprocessed(box, [0, 1, 2], [[0, 10], [0, 10], [0, 10]], [10, 10, 10], [10, 10, 10])
    assert result == box


def test_box_partly_outside_the_crop_is_clipped():
    box = Box(2, (2, 0, 10), (5, 49, 50))  # raw x 10..50 -> clipped to 16..40; raw y 0..49 -> 5..45
    result = box_to_preprocessed(box, TRANSPOSE, CROP, SHAPE_AFTER_CROP, [48, 16, 80])
    # x: 0 .. 24 -> 0 .. 48; z: 2 .. 5 -> 4 .. 10; y: 0 .. 40 -> 0 .. 80
    assert result == Box(2, (0, 4, 0), (48, 10, 80))


@pytest.mark.parametrize("x_range", [(0, 10), (10, 16), (40, 45), (55, 60)])
def test_box_entirely_outside_the_crop_is_none(x_range):
    # touching the crop at 16 (stop exclusive) or starting at its stop 40 is still outside
    box = Box(2, (2, 10, x_range[0]), (5, 30, x_range[1]))
    assert box_to_preprocessed(box, TRANSPOSE, CROP, SHAPE_AFTER_CROP, [48, 16, 80]) is None


def test_downsampling_keeps_at_least_one_voxel():
    # a 1-voxel box at y = 20 (cropped 15), y scale 4 / 40 = 0.1: 1.5 .. 1.6 -> 1 .. 2
    box = Box(2, (3, 20, 20), (4, 21, 21))
    result = box_to_preprocessed(box, TRANSPOSE, CROP, SHAPE_AFTER_CROP, [3, 1, 4])
    # x: 4 .. 5 at 3 / 24 = 0.125 -> 0.5 .. 0.625 -> 0 .. 1; z: 3 .. 4 at 1 / 8 -> 0.375 .. 0.5 -> 0 .. 1
    assert result == Box(2, (0, 0, 1), (1, 1, 2))


def test_downsampling_at_the_last_voxel_stays_inside():
    box = Box(2, (7, 44, 39), (8, 45, 40))  # the last voxel of the crop on every axis
    result = box_to_preprocessed(box, TRANSPOSE, CROP, SHAPE_AFTER_CROP, [3, 1, 4])
    # x: 23 .. 24 at 0.125 -> 2.875 .. 3 -> 2 .. 3; z: 7 .. 8 at 0.125 -> 0 .. 1; y: 39 .. 40 at 0.1 -> 3 .. 4
    assert result == Box(2, (2, 0, 3), (3, 1, 4))


def test_every_small_box_maps_to_a_non_empty_box_inside_the_image():
    crop, after_crop = [[0, 100], [0, 10], [0, 10]], [100, 10, 10]
    for new_length in (1, 3, 7, 33, 100, 250):
        for start in range(100):
            box = Box(1, (start, 0, 0), (start + 1, 10, 10))
            result = box_to_preprocessed(box, [0, 1, 2], crop, after_crop, [new_length, 10, 10])
            assert 0 <= result.min[0] < result.max[0] <= new_length
            # the resampled box covers the physical extent of the original
            assert result.min[0] <= start * new_length / 100 + 1e-9
            assert result.max[0] >= (start + 1) * new_length / 100 - 1e-9


# ------------------------------------------------------------------------------------ labels -> boxes

def test_boxes_from_label_map_with_margin_and_clipping():
    label_map = np.zeros((10, 10, 10), np.uint8)
    label_map[1:3, 4:6, 7:10] = 2     # touches the x border
    label_map[6:8, 1:3, 2:4] = 2
    label_map[4:6, 6:9, 0:2] = 1      # another label: ignored
    boxes = boxes_from_label_map(label_map, 2, margin=2)
    # tight boxes [1,4,7]..[3,6,10] and [6,1,2]..[8,3,4]; +-2 clipped to 0..10
    assert boxes == [Box(2, (0, 2, 5), (5, 8, 10)), Box(2, (4, 0, 0), (10, 5, 6))]
    assert boxes_from_label_map(label_map, 2) == [Box(2, (1, 4, 7), (3, 6, 10)), Box(2, (6, 1, 2), (8, 3, 4))]
    assert boxes_from_label_map(label_map, 1, margin=1) == [Box(1, (3, 5, 0), (7, 10, 3))]


def test_boxes_from_label_map_connectivity_min_voxels_and_empty():
    label_map = np.zeros((4, 4, 4), np.uint8)
    label_map[0, 0, 0] = 1
    label_map[1, 1, 1] = 1          # diagonal neighbour: one component with 26-, two with 6-connectivity
    label_map[3, 3, 3] = 1
    assert boxes_from_label_map(label_map, 1) == [Box(1, (0, 0, 0), (2, 2, 2)), Box(1, (3, 3, 3), (4, 4, 4))]
    assert len(boxes_from_label_map(label_map, 1, connectivity=6)) == 3
    assert boxes_from_label_map(label_map, 1, min_voxels=2) == [Box(1, (0, 0, 0), (2, 2, 2))]
    assert boxes_from_label_map(label_map, 2) == []
    with pytest.raises(ValueError, match="margin"):
        boxes_from_label_map(label_map, 1, margin=-1)


def test_box_mask():
    boxes = [Box(1, (0, 0, 0), (2, 2, 2)), Box(2, (1, 1, 1), (3, 4, 2)), Box(1, (3, 3, 3), (4, 4, 4))]
    mask = box_mask((4, 4, 4), boxes)
    # 8 + 2 * 3 * 1 - overlap (voxel (1, 1, 1)) + 1 = 8 + 6 - 1 + 1 = 14
    assert mask.dtype == bool and mask.sum() == 14
    only_two = box_mask((4, 4, 4), boxes, label=2)
    assert only_two.sum() == 6 and only_two[1:3, 1:4, 1].all()
    assert box_mask((4, 4, 4), boxes, label=1).sum() == 9
    assert not box_mask((4, 4, 4), []).any()
