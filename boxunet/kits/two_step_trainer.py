"""``TwoStepAttention``: the plans' U-Net with [Pan 2019]'s 2-step attention head (boxunet.nets.two_step),
trained with the segmentation loss plus the binary cross-entropy of the head's first step.

When dataset.json has a ``"case_classification"`` (boxunet.io.dataset_json.CaseClassification), the network
also classifies patches: a training patch's class is 0 when its target holds none of the classified label,
else 1 + its case's class (ignored when the case has none), learnt with cross-entropy. A predicted case's
class is the majority vote, over the sliding-window patches that hold the label in the predicted
segmentation, of each patch's most likely class (ties: the higher summed probability; no such patch: no
class); the prediction report gives the class and the votes per case.
"""
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from boxunet.errors import BoxunetError
from boxunet.inference.sliding_window import pad_to_window, patch_windows
from boxunet.io.dataset_json import parse_case_classification
from boxunet.nets.precision import autocast
from boxunet.nets.two_step import TwoStepUNet
from boxunet.planning.plans import ConfigurationPlan, Plans
from boxunet.preprocessing.previous_stage import network_input_channels
from boxunet.training.losses import AuxiliaryHeadLoss, binary_cross_entropy_of_foreground
from boxunet.training.trainer import Trainer

NO_CLASS = -100  # cross-entropy's ignore index: a patch with the label in a case of unknown class


def _two_step_network(plans: Plans, configuration: ConfigurationPlan, num_outputs: int,
                      case_classification: dict | None) -> TwoStepUNet:
    classes = case_classification["classes"] if case_classification else []
    network = TwoStepUNet(configuration.architecture, network_input_channels(plans, configuration), num_outputs,
                          num_case_classes=len(classes))
    network.case_classification = case_classification
    # the output channel whose prediction marks the classified label: its region, or the label itself
    targets = plans.label_set.output_values
    label = case_classification["label"] if case_classification else None
    network.classified_channel = targets.index([label]) if [label] in targets else None
    network.region_outputs = plans.label_set.region_based
    return network


def class_votes(networks: list[TwoStepUNet], data: torch.Tensor, mask: torch.Tensor, patch_size, step_size: float,
                device: torch.device, precision: str) -> np.ndarray:
    """Per case class, the patches that vote for it, and its summed probability (``(2, classes)``): every
    sliding-window patch of ``data`` ``(C, *shape)`` where ``mask`` ``(*shape)`` is set votes for its most
    likely class (the folds' probabilities averaged)."""
    patch_size = tuple(int(p) for p in patch_size)
    window = (1,) * (data.ndim - 1 - len(patch_size)) + patch_size
    padded, _ = pad_to_window(data.float(), window)
    padded_mask, _ = pad_to_window(mask[None].float(), window)
    _, windows = patch_windows(padded.shape[1:], patch_size, step_size)
    tally = np.zeros((2, networks[0].classifier.out_features - 1))
    with torch.no_grad(), autocast(device, precision):
        for region in windows:
            if not padded_mask[(0, *region)].any():
                continue
            patch = padded[(slice(None), *region)][None].to(device)
            if len(patch_size) < len(window):
                patch = patch.squeeze(2)
            probabilities = sum(torch.softmax(n.classify(patch).float(), 1) for n in networks)[0, 1:].cpu().numpy()
            tally[0, probabilities.argmax()] += 1
            tally[1] += probabilities / len(networks)
    return tally


def majority_class(tally: np.ndarray, classes: list[str]) -> str | None:
    """The class with the most votes (ties: the higher summed probability); None without votes."""
    if not tally[0].any():
        return None
    return classes[max(range(len(classes)), key=lambda c: (tally[0, c], tally[1, c]))]


class TwoStepAttention(Trainer):
    """Binary (kidney and tumor vs. background) attention, then the classes ([Pan 2019], Eq. 1); optionally the
    case classification of the module docstring."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.case_classification, self._case_classes = None, {}

    def initialize(self) -> None:
        """Read the case classification of dataset.json (a bad one is an error naming the file), then build."""
        description = parse_case_classification(self.dataset_json.get("case_classification"), self.plans.labels,
                                                self._dataset_json_error)
        self.case_classification = description.to_json() if description else None
        if self.case_classification:
            del self.case_classification["cases"]  # per-case training labels are not part of the model
            self._case_classes = description.cases
        super().initialize()

    @classmethod
    def build_network(cls, plans: Plans, configuration: ConfigurationPlan, num_outputs: int,
                      settings: Mapping) -> nn.Module:
        return _two_step_network(plans, configuration, num_outputs, settings.get("case_classification"))

    def network_settings(self) -> dict:
        return {"case_classification": self.case_classification}

    def _dataset_json_error(self, message: str):
        raise BoxunetError(f"file {self.folders.preprocessed / 'dataset.json'}: {message}")

    def build_loss(self) -> nn.Module:
        return AuxiliaryHeadLoss(super().build_loss(), binary_cross_entropy_of_foreground)

    def segmentation_outputs(self, outputs) -> list:
        return outputs[0][0] if self.case_classification else outputs[0]

    def patch_classes(self, batch: dict) -> torch.Tensor:
        """The class target of every patch of a batch (see the module docstring)."""
        label = self.case_classification["label"]
        holds = (batch["target"][0][:, :1] == label).flatten(1).any(1)
        classes = self.case_classification["classes"]
        case_class = [classes.index(self._case_classes[k]) + 1 if k in self._case_classes else NO_CLASS
                      for k in batch["keys"]]
        return torch.where(holds, torch.tensor(case_class), torch.zeros_like(holds, dtype=torch.long))

    def compute_loss(self, outputs, batch: dict) -> tuple[torch.Tensor, list]:
        if not self.case_classification:
            return super().compute_loss(outputs, batch)
        head_outputs, class_logits = outputs
        loss, targets = super().compute_loss(head_outputs, batch)
        target = self.patch_classes(batch).to(class_logits.device)
        if (target != NO_CLASS).any():
            return loss + F.cross_entropy(class_logits.float(), target, ignore_index=NO_CLASS), targets
        return loss + 0 * class_logits.sum(), targets  # keeps the classifier in the graph (DDP)

    @classmethod
    def predict_preprocessed(cls, networks, data, configuration, num_outputs, mirror_axes, step_size, device,
                             precision):
        logits, details = super().predict_preprocessed(networks, data, configuration, num_outputs, mirror_axes,
                                                       step_size, device, precision)
        classification, channel = networks[0].case_classification, networks[0].classified_channel
        if not classification or channel is None:
            return logits, details
        mask = logits[channel] > 0 if networks[0].region_outputs else logits.argmax(0) == channel
        tally = class_votes(networks, data, mask, configuration.patch_size, step_size, device, precision)
        classes = classification["classes"]
        return logits, dict(details, case_class=majority_class(tally, classes),
                            class_votes={c: int(v) for c, v in zip(classes, tally[0])})
