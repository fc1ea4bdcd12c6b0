"""``BoxThreeStage``: [Yang 2020]'s three stages for one fold.

1. the stage-1 pseudo masks (``boxunet_pseudo_labels``, made with its defaults when missing) on the grid;
2. with ``--k K > 0``, stage 2 (boxunet.training.box.stage2): K group networks and the fusion masks with
   their voxel weight maps;
3. this trainer's own network on the fusion masks with voxel-wise weighted cross-entropy (VWCE), or on the
   stage-1 masks with WCE when ``--k 0``.

Before training, ``box_report.json`` scores the boxes, stage-1 and fusion masks of the training cases against
the dense reference labels where they exist (boxunet.evaluation.box_report).
"""
from dataclasses import replace
from pathlib import Path

import numpy as np

from boxunet.boxes.stage1 import stage1_folder, stage1_mask_path
from boxunet.errors import BoxunetError
from boxunet.evaluation.box_report import BoxMasks, box_report
from boxunet.io.atomic import read_json, write_json
from boxunet.io.boxes import case_boxes, read_boxes
from boxunet.io.images import read_image
from boxunet.preprocessing.grid_labels import open_target
from boxunet.training.box.losses import ClassWeightedDecision, box_loss
from boxunet.training.box.options import BoxThreeStageOptions
from boxunet.training.box.stage2 import Stage2, raw_training_cases
from boxunet.training.box.trainers import StoredTargetTrainer


class BoxThreeStage(ClassWeightedDecision, StoredTargetTrainer):
    """[Yang 2020]'s three stages; the final network is this trainer's own."""

    options_class = BoxThreeStageOptions

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.labels.region_based:
            raise BoxunetError("BoxThreeStage trains label maps; region-based datasets are not supported")
        if self.options.group_epochs is None:
            # fixed when the run starts (and recorded in its checkpoints): `--c --epochs N` later extends the
            # final network without changing stage 2
            self.options = replace(self.options, group_epochs=self.options.epochs)

    @property
    def loss_name(self) -> str:
        """``--loss``, without the voxel weights when ``--k 0`` leaves no weight maps."""
        return self.options.box_loss if self.options.group_networks > 0 else self.options.box_loss.removeprefix("v")

    @property
    def uses_voxel_weights(self) -> bool:
        return self.loss_name.startswith("vwce")

    def segmentation_loss(self):
        return box_loss(self.loss_name, self.num_outputs, self.configuration.batch_dice)

    def prepare_targets(self) -> Path:
        """Stage 1, then stage 2 with ``--k`` > 0, then the box report; the final network's target store."""
        stage1 = self.stage1_store()
        self.check_validation_reference()
        reference = self.reference_store()  # every rank: it synchronizes them
        targets, raw_cases = stage1, None
        if self.options.group_networks > 0:
            stage2 = Stage2(self.setup, self.options, self.group, self.log, self.previous_stage_folder)
            raw_cases = raw_training_cases(self.setup)  # checked before the group networks train
            networks = stage2.train_group(stage1)
            targets = stage2.fusion_store(stage1, stage2.group_predictor(networks, self.network_input), raw_cases)
            del networks
        if self.group.is_main:
            self._write_box_report(stage1, reference, raw_cases)
            masks = "fusion" if self.options.group_networks > 0 else "stage-1"
            self.log(f"stage 3: the final network on the {masks} masks ({self.loss_name}); box_report.json: Dice of "
                     "the boxes and masks")
        return targets

    # ------------------------------------------------------------------------------------ report
    def _report_masks(self, stage1: Path, reference: tuple[Path | None, dict], raw_cases: dict | None):
        """The resolution the report scores at and each training case's ``BoxMasks``: at the raw resolution,
        where stage 1 and fusion make their masks, when the raw dataset is there (``raw_cases``, listed by stage 2
        or here); else on the grid (boxes rounded outwards)."""
        fusion = self.output_folder / "stage2" / "fusion" if self.options.group_networks > 0 else None
        ending = self.dataset_json["file_ending"]
        if raw_cases is None:
            try:  # without stage 2, a missing raw dataset or case means the grid
                raw_cases = raw_training_cases(self.setup)
            except BoxunetError:
                pass
        if raw_cases is not None:

            def raw_masks(case_id):
                case = raw_cases[case_id]
                return BoxMasks(case_id, read_image(case.label)[0] if case.label is not None else None,
                                read_image(stage1_mask_path(self.folders.preprocessed, case_id, ending))[0],
                                read_image(fusion / f"{case_id}{ending}")[0] if fusion else None,
                                read_boxes(case.boxes) if case.boxes is not None else [])
            return "raw", map(raw_masks, self.train_cases)
        reference_folder, present = reference
        cases = self.preprocessed_cases(self.train_cases)

        def grid_masks(case_id):
            truth = (np.asarray(open_target(reference_folder, case_id)[0])
                     if reference_folder and present.get(case_id) else None)
            return BoxMasks(case_id, truth, np.asarray(open_target(stage1, case_id)[0]),
                            np.asarray(open_target(fusion, case_id)[0]) if fusion else None,
                            case_boxes(cases.load(case_id)[2]))
        return self.configuration.data_identifier, map(grid_masks, self.train_cases)

    def _case_seconds(self, case_id: str) -> dict:
        """A case's stage-1 seconds (its pseudo-label record) and fusion ConvCRF seconds, where recorded."""
        stage1_record = stage1_folder(self.folders.preprocessed) / f"{case_id}.json"
        fusion_record = self.output_folder / "stage2" / "fusion" / f"{case_id}_timing.json"
        seconds = {}
        if stage1_record.is_file():
            seconds["stage1"] = read_json(stage1_record)["seconds"]
        if self.options.group_networks > 0 and fusion_record.is_file():
            seconds["fusion"] = read_json(fusion_record)["convcrf_seconds"]
        return seconds

    def _write_box_report(self, stage1: Path, reference: tuple[Path | None, dict], raw_cases: dict | None) -> None:
        """``box_report.json``: Dice of boxes, stage-1 and fusion masks against the reference labels (Table 1),
        for the cases whose reference holds the label, and the seconds stage 1 and the fusion ConvCRF took."""
        resolution, masks = self._report_masks(stage1, reference, raw_cases)
        report = box_report(masks, self.plans.box_labels, {c: self._case_seconds(c) for c in self.train_cases})
        write_json({"trainer": type(self).__name__, "group_networks": self.options.group_networks,
                    "loss": self.loss_name, "resolution": resolution, **report},
                   self.output_folder / "box_report.json")
