"""Trainers for datasets whose ``box_labels`` are given as boxes (documentation/box_supervision.md), and the target
stores they train on. Dense labels of the other classes are trusted wherever they are given.

* ``BoxFill``: every box voxel without a dense label is its box's label (Dice + CE).
* ``BoxIgnore``: the loss ignores box voxels without a dense label (nnU-Net's ignore-label baseline).
* ``PseudoMaskIgnoreBoxBackground`` ([Fan 2022]'s segmentation loss): Dice + CE on the stage-1 pseudo masks
  (``boxunet_pseudo_labels``, any method, e.g. ``--method acol``), ignoring the box voxels they call background.
* ``FullySupervised``: the dense reference labels of the box labels (for comparison when they exist).

``BoxThreeStage`` ([Yang 2020]'s method) is in boxunet.training.box.three_stage.
"""
from pathlib import Path

import numpy as np

from boxunet.boxes.stage1 import (PseudoLabelRequest, changed_since_stage1, generate_pseudo_labels, stage1_folder,
                                  stage1_mask_path, stage1_settings)
from boxunet.errors import BoxunetError
from boxunet.io.atomic import read_json, write_json
from boxunet.io.boxes import case_boxes
from boxunet.io.cases import list_training_cases
from boxunet.io.dataset_json import load_dataset_json
from boxunet.io.images import read_image
from boxunet.preprocessing.grid_labels import open_target, store_raw_label_maps
from boxunet.training.box.samplers import (BoxFillSampler, BoxIgnoreSampler, IgnoreBoxBackgroundSampler,
                                           StoredTargetSampler)
from boxunet.training.distributed import barrier
from boxunet.training.trainer import Trainer


class BoxDatasetTrainer(Trainer):
    """A trainer for datasets with ``box_labels``; refuses others before training. Validation scores the dense
    labels when every case has them, else agreement with the stage-1 pseudo masks."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.plans.box_labels:
            raise BoxunetError(f"{type(self).__name__} needs a dataset with \"box_labels\" in dataset.json; "
                               "this one has none (use the standard Trainer)")
        self._validation_reference: Path | None = None

    def prepare_targets(self) -> Path | None:
        self.check_validation_reference()
        return None

    def check_validation_reference(self) -> None:
        """Before training: every validation case must have its reference (``validation_reference``)."""
        reference = self.validation_reference()
        ending = self.dataset_json["file_ending"]
        missing = [c for c in self.val_cases if not (reference / f"{c}{ending}").is_file()]
        if missing:
            raise BoxunetError(f"validation of {', '.join(missing[:5])}: these cases have no dense labels of their "
                               f"boxes' labels, and their stage-1 pseudo masks are missing in {reference}; run "
                               f"boxunet_pseudo_labels -d {self.folders.name} first")

    def validation_reference(self) -> Path:
        """The dense labels when every case's label map holds the labels of its boxes; otherwise (boxes only,
        missing label maps, or a mix) the stage-1 pseudo masks, so validation reports agreement with the
        box-derived masks rather than scoring missing references as misses. A case without boxes (no box
        label, by what a box means) needs no box label in its label map. Decided over all cases of the fold
        (training and validation), so that every fold of a dataset uses the same reference."""
        if self._validation_reference is None:
            dense = super().validation_reference()
            ending = self.dataset_json["file_ending"]
            case_ids = self.train_cases + self.val_cases
            cases = self.preprocessed_cases(case_ids)
            self._validation_reference = dense
            for case_id in case_ids:
                path = dense / f"{case_id}{ending}"
                drawn = {box.label for box in case_boxes(cases.load(case_id)[2])}
                if not path.is_file() or not drawn <= set(np.unique(read_image(path)[0]).tolist()):
                    self._validation_reference = stage1_folder(self.folders.preprocessed)
                    break
        return self._validation_reference

    def reference_store(self) -> tuple[Path | None, dict[str, list[int]]]:
        """Dense reference labels (box labels included) on this grid, from gt_segmentations, and the box labels
        each case's reference holds; (None, {}) when no label map holds a box label."""
        ending = self.dataset_json["file_ending"]
        files = {c: self.folders.preprocessed / "gt_segmentations" / f"{c}{ending}"
                 for c in self.train_cases + self.val_cases}
        if not all(path.is_file() for path in files.values()):
            return None, {}
        folder = self.folders.preprocessed / "pseudo_labels" / f"reference_{self.configuration.data_identifier}"
        index = folder / "box_labels_present.json"
        if self.group.is_main:
            stored_now = store_raw_label_maps(folder, self.preprocessed_cases(list(files)), files, self.plans,
                                              self.configuration)
            present = {c: v for c, v in (read_json(index) if index.is_file() else {}).items() if c not in stored_now}
            for case_id in files:
                if case_id not in present:
                    values = np.unique(np.asarray(open_target(folder, case_id)[0])).tolist()
                    present[case_id] = [v for v in self.plans.box_labels if v in values]
            write_json(present, index)
        barrier(self.group)
        present = read_json(index)
        if not any(present.get(c) for c in files):
            return None, {}
        return folder, present

    def stage1_store(self) -> Path:
        """The stage-1 pseudo label maps on this grid (made with boxunet_pseudo_labels defaults if missing)."""
        raw_folder = stage1_folder(self.folders.preprocessed)
        ending = self.dataset_json["file_ending"]
        case_ids = self.train_cases + self.val_cases
        files = {c: stage1_mask_path(self.folders.preprocessed, c, ending) for c in case_ids}
        folder = self.folders.preprocessed / "pseudo_labels" / f"stage1_{self.configuration.data_identifier}"
        if not all(path.is_file() for path in files.values()):
            if self.group.distributed or self.folders.raw is None:
                # every rank sees the same files, so every rank raises: nobody waits at a barrier
                raise BoxunetError(f"stage-1 pseudo labels are missing in {raw_folder}; run boxunet_pseudo_labels -d "
                                   f"{self.folders.name} first (needs the raw dataset; multi-process training does "
                                   "not make them itself)")
            if self.log:
                self.log(f"stage 1: pseudo labels missing in {raw_folder}; running boxunet_pseudo_labels")
            generate_pseudo_labels(PseudoLabelRequest(self.folders.name, progress=self.options.progress_bar,
                                                      folders=self.folders))
        self._check_stage1_is_current(case_ids)
        if self.group.is_main:
            store_raw_label_maps(folder, self.preprocessed_cases(case_ids), files, self.plans, self.configuration)
        barrier(self.group)
        return folder

    def _check_stage1_is_current(self, case_ids: list[str]) -> None:
        """Refuse stage-1 masks whose case files changed since they were made (with the raw dataset at hand)."""
        if self.folders.raw is None:
            return
        cases, _ = list_training_cases(self.folders.raw, load_dataset_json(self.folders.raw))
        wanted = set(case_ids)
        changed = changed_since_stage1(self.folders.preprocessed, [c for c in cases if c.case_id in wanted])
        if changed:
            method, _ = stage1_settings(self.folders.preprocessed)
            raise BoxunetError(f"the files of case(s) {', '.join(changed[:5])} changed after their stage-1 pseudo labels "
                               f"were made; rerun boxunet_pseudo_labels -d {self.folders.name} --method {method} (it "
                               "remakes only those cases), then train")


class BoxFill(BoxDatasetTrainer):
    """Boxes filled with their label (the boxes themselves as masks), Dice + CE."""

    def sampler_options(self, targets: Path | None) -> dict:
        return {"sampler_class": BoxFillSampler}


class BoxIgnore(BoxDatasetTrainer):
    """Dice + CE on the known voxels only: outside the boxes and on dense labels."""

    def sampler_options(self, targets: Path | None) -> dict:
        return {"sampler_class": BoxIgnoreSampler}


class StoredTargetTrainer(BoxDatasetTrainer):
    """Trains on the target store that ``prepare_targets`` returns (label map, and weight map when the loss
    uses voxel weights)."""

    uses_voxel_weights = False

    def sampler_options(self, targets: Path | None) -> dict:
        return {"sampler_class": StoredTargetSampler,
                "sampler_arguments": {"target_folder": targets, "weights": self.uses_voxel_weights}}


class FullySupervised(StoredTargetTrainer):
    """The dense reference labels, box labels included (Dice + CE): the upper bound for the box trainers."""

    def prepare_targets(self) -> Path:
        folder = self.reference_store()[0]
        if folder is None:
            raise BoxunetError("FullySupervised needs label maps (labelsTr) that hold the box labels; this dataset's "
                               "hold none")
        self.check_validation_reference()
        return folder


class PseudoMaskIgnoreBoxBackground(StoredTargetTrainer):
    """Dice + CE on the stage-1 pseudo masks, the box voxels they call background ignored ([Fan 2022])."""

    def prepare_targets(self) -> Path:
        folder = self.stage1_store()
        self.check_validation_reference()
        return folder

    def sampler_options(self, targets: Path | None) -> dict:
        return {"sampler_class": IgnoreBoxBackgroundSampler, "sampler_arguments": {"target_folder": targets}}
