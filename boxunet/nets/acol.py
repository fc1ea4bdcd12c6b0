"""The region-mining classifier of [Fan 2022]: a 2D feature pyramid, box features, and adversarial
complementary learning (ACoL).

* ``PyramidBackbone``: a small residual encoder (no torchvision) whose stages have strides 4, 8, 16, 32
  (C2..C5), fused top-down into P2..P5 with ``pyramid_channels`` channels (FPN).
* ``roi_features``: the features of a box on its pyramid level, sampled bilinearly on an ``R x R`` grid
  over the box (the role RoIAlign plays in [Fan 2022]).
* ``ACoLHead``: two classifiers A and B (conv 3x3 to ``hidden`` channels, 512 in [Fan 2022], ReLU, conv 1x1 to
  2 classes; [Fan 2022]'s layers), each giving a class map whose spatial mean is the box's logits (CAM). A's
  foreground map, ReLU'd and min-max normalized, erases the box features where it exceeds the salient threshold
  delta (0.6); B classifies what is left, so it must find the parts A did not use. The fused localization map
  is the element-wise maximum of both normalized maps, in [0, 1].
"""
import torch
import torch.nn.functional as F
from torch import nn

SALIENT_THRESHOLD = 0.6
ROI_SIZE = 14
HIDDEN_CHANNELS = 512


class ResidualBlock(nn.Module):
    """Two 3x3 convs with batch norm and a shortcut (1x1 conv when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False), nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False), nn.BatchNorm2d(out_channels))
        self.shortcut = nn.Identity() if stride == 1 and in_channels == out_channels else nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class PyramidBackbone(nn.Module):
    """Encoder stages C2..C5 (strides 4..32) and their FPN fusion P2..P5 (``forward`` returns {level: map})."""

    def __init__(self, in_channels: int, widths=(32, 64, 128, 256), pyramid_channels: int = 64):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
        self.stages = nn.ModuleList(ResidualBlock(widths[max(0, i - 1)], width, 2) for i, width in enumerate(widths))
        self.lateral = nn.ModuleList(nn.Conv2d(width, pyramid_channels, 1) for width in widths)
        self.smooth = nn.ModuleList(nn.Conv2d(pyramid_channels, pyramid_channels, 3, 1, 1) for _ in widths)

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        features, x = [], self.stem(x)
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        merged = [None] * len(features)
        top = None
        for index in range(len(features) - 1, -1, -1):
            lateral = self.lateral[index](features[index])
            top = lateral if top is None else lateral + F.interpolate(top, size=lateral.shape[-2:], mode="nearest")
            merged[index] = self.smooth[index](top)
        return {level: feature for level, feature in zip(range(2, 2 + len(merged)), merged)}


def roi_features(feature_map: torch.Tensor, boxes: torch.Tensor, stride: int, size: int = ROI_SIZE) -> torch.Tensor:
    """``(N, C, size, size)`` features of ``boxes`` ``(N, 4)`` (pixels, ``[y0, x0, y1, x1]``) of one image, sampled
    bilinearly from its ``feature_map`` ``(1, C, H, W)`` at the centres of a ``size x size`` grid over each
    box (one ``grid_sample`` for all boxes); a feature cell ``i`` covers pixels ``[i * stride, (i + 1) * stride)``."""
    # positions in float32 whatever the features' precision (bfloat16 rounds pixel 301 to 300)
    steps = (torch.arange(size, dtype=torch.float32, device=feature_map.device) + 0.5) / size
    boxes = boxes.float()
    ys = boxes[:, 0:1] + steps[None] * (boxes[:, 2:3] - boxes[:, 0:1])  # (N, size) pixel rows
    xs = boxes[:, 1:2] + steps[None] * (boxes[:, 3:4] - boxes[:, 1:2])
    height, width = feature_map.shape[-2:]
    count = len(boxes)
    grid_y = (2 * ys / (stride * height) - 1)[:, :, None].expand(count, size, size)
    grid_x = (2 * xs / (stride * width) - 1)[:, None, :].expand(count, size, size)
    grid = torch.stack([grid_x, grid_y], dim=-1).reshape(1, count * size, size, 2)
    sampled = F.grid_sample(feature_map.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return sampled.reshape(feature_map.shape[1], count, size, size).transpose(0, 1)


def normalized_map(class_map: torch.Tensor) -> torch.Tensor:
    """A foreground map ``(N, H, W)`` ReLU'd and min-max normalized per box to [0, 1] (0 where it is flat)."""
    activated = F.relu(class_map)
    low = activated.flatten(1).min(1).values[:, None, None]
    high = activated.flatten(1).max(1).values[:, None, None]
    return torch.where(high > low, (activated - low) / (high - low).clamp_min(1e-12), torch.zeros_like(activated))


def erase_salient(features: torch.Tensor, salient: torch.Tensor, threshold: float = SALIENT_THRESHOLD) -> torch.Tensor:
    """``features`` ``(N, C, H, W)`` set to 0 where the normalized map ``salient`` ``(N, H, W)`` exceeds
    ``threshold`` (the map is not differentiated through)."""
    return features * (salient.detach() <= threshold).to(features.dtype)[:, None]


class ACoLHead(nn.Module):
    """Classifiers A and B with complementary erasing (see the module docstring)."""

    def __init__(self, channels: int, hidden: int = HIDDEN_CHANNELS, threshold: float = SALIENT_THRESHOLD):
        super().__init__()
        self.threshold = threshold
        self.branch_a, self.branch_b = (nn.Sequential(nn.Conv2d(channels, hidden, 3, 1, 1), nn.ReLU(inplace=True),
                                                      nn.Conv2d(hidden, 2, 1)) for _ in range(2))

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """``logits_a``, ``logits_b`` ``(N, 2)``; ``map_a``, ``map_b``, ``fused`` ``(N, H, W)`` in [0, 1]."""
        class_map_a = self.branch_a(features)
        map_a = normalized_map(class_map_a[:, 1])
        class_map_b = self.branch_b(erase_salient(features, map_a, self.threshold))
        map_b = normalized_map(class_map_b[:, 1])
        return {"logits_a": class_map_a.mean((2, 3)), "logits_b": class_map_b.mean((2, 3)),
                "map_a": map_a, "map_b": map_b, "fused": torch.maximum(map_a, map_b)}


class RegionMiner(nn.Module):
    """The whole classifier: pyramid backbone, box features on each box's level, ACoL head."""

    def __init__(self, in_channels: int, pyramid_channels: int = 64, roi_size: int = ROI_SIZE,
                 threshold: float = SALIENT_THRESHOLD, hidden: int = HIDDEN_CHANNELS):
        super().__init__()
        self.backbone = PyramidBackbone(in_channels, pyramid_channels=pyramid_channels)
        self.head = ACoLHead(pyramid_channels, hidden, threshold)
        self.roi_size = roi_size

    def forward(self, images: torch.Tensor, image_index: torch.Tensor, levels: torch.Tensor,
                boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        """The head's outputs for ``boxes`` ``(N, 4)`` of ``images`` ``(B, C, H, W)``: box ``n`` belongs to
        image ``image_index[n]`` and is read from pyramid level ``levels[n]``."""
        pyramid = self.backbone(images)
        unknown = sorted(set(levels.tolist()) - set(pyramid))
        if unknown:
            raise ValueError(f"pyramid levels {unknown} do not exist; the pyramid has {sorted(pyramid)}")
        channels = next(iter(pyramid.values())).shape[1]
        features = torch.zeros((len(boxes), channels, self.roi_size, self.roi_size), device=images.device,
                               dtype=next(iter(pyramid.values())).dtype)
        for level, feature_map in pyramid.items():
            for image in range(len(images)):
                chosen = ((levels == level) & (image_index == image)).nonzero(as_tuple=True)[0]
                if len(chosen):
                    features[chosen] = roi_features(feature_map[image:image + 1], boxes[chosen], 2 ** level,
                                                     self.roi_size).to(features.dtype)  # sampled in fp32
        return self.head(features)
