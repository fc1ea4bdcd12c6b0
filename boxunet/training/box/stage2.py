"""Stage 2 of [Yang 2020]'s box method as a resumable job of one fold.

K group networks, each trained by the engine on a disjoint subset of the fold's training cases with the
stage-1 masks as targets (WCE, plus Dice with a ``*_dice`` loss), predict every training case; the fusion
masks and voxel weight maps (Eq. 5, 6; boxunet.boxes.fusion) are made from those predictions at the raw
resolution, where stage 1 made its masks, and stored on the grid as the final network's targets.

Files in ``fold_X/stage2/``:

* ``settings.json``: what the group networks depend on (``group_settings``); other settings remake stage 2;
* ``group_<k>/``: each group network's training folder (an interrupted one resumes from its latest checkpoint);
* ``fusion/``: ``settings.json``, per training case ``<case><ending>`` and ``<case>_weights<ending>`` (raw
  geometry), ``<case>_timing.json`` (ConvCRF seconds) and ``pictures/<case>.png`` (boxes, stage-1 and fusion
  masks on the slices through each box), and the target store on the grid.
"""
import math
import random
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from boxunet.boxes.fusion import NETWORK_LOGIT, UNION_LOGIT, dense_label_map, fusion_target
from boxunet.boxes.stage1 import stage1_mask_path, stage1_settings
from boxunet.errors import BoxunetError
from boxunet.evaluation.pictures import picture_path, write_box_picture
from boxunet.inference.export import logits_to_segmentation, revert_preprocessing
from boxunet.inference.regions import predict_box_regions
from boxunet.io.atomic import read_json, write_json
from boxunet.io.boxes import Box, case_boxes, read_boxes
from boxunet.io.cases import CaseFiles, list_training_cases
from boxunet.io.checkpoint import load_checkpoint
from boxunet.io.dataset_json import load_dataset_json
from boxunet.io.images import read_channels, read_image, write_image
from boxunet.io.stamps import file_stamp
from boxunet.nets.precision import resolve_precision
from boxunet.preprocessing.grid_labels import has_target, open_target, raw_labels_to_grid, target_path, write_target
from boxunet.training.box.losses import ClassWeightedDecision, box_loss
from boxunet.training.box.options import BoxThreeStageOptions
from boxunet.training.box.trainers import StoredTargetTrainer
from boxunet.training.data.dataset import PreprocessedCases
from boxunet.training.distributed import ProcessGroupInfo, barrier
from boxunet.training.progress import LogFile
from boxunet.training.setup import TrainingSetup

REGION_MARGIN = 0.25  # context around a box the group networks predict, in patches per side
GroupPredictor = Callable[[str], list[np.ndarray]]  # case id -> each group network's label map at the raw resolution


class BoxGroupMember(ClassWeightedDecision, StoredTargetTrainer):
    """A stage-2 group network: WCE (plus Dice with a ``*_dice`` loss) on the stage-1 masks of its subset."""

    options_class = BoxThreeStageOptions

    def __init__(self, setup: TrainingSetup, options: BoxThreeStageOptions, group: ProcessGroupInfo, stage1: Path,
                 previous_stage_folder: Path | None):
        super().__init__(setup, options, group)
        self.stage1, self.previous_stage_folder = stage1, previous_stage_folder

    def prepare_targets(self) -> Path:
        return self.stage1

    def segmentation_loss(self):
        # the stage-1 masks have no weight maps: vwce -> wce, vwce_dice -> wce_dice
        return box_loss(self.options.box_loss.removeprefix("v"), self.num_outputs, self.configuration.batch_dice)


def group_subsets(case_ids: list[str], k: int, seed: int) -> list[list[str]]:
    """``case_ids`` split into ``k`` disjoint subsets of (almost) equal size, shuffled with ``seed``."""
    if k < 1 or k > len(case_ids):
        raise BoxunetError(f"--k {k}: need 1 <= k <= the {len(case_ids)} training cases of the fold")
    shuffled = sorted(case_ids)
    random.Random(seed).shuffle(shuffled)
    return [sorted(shuffled[i::k]) for i in range(k)]


def raw_training_cases(setup: TrainingSetup) -> dict[str, CaseFiles]:
    """The raw files of the fold's training cases (fusion runs on the raw images, like stage 1)."""
    folder = setup.folders.require_raw("stage 2 makes its fusion masks at the raw resolution, like stage 1, and")
    cases = {case.case_id: case for case in list_training_cases(folder, load_dataset_json(folder))[0]}
    missing = [c for c in setup.train_cases if c not in cases]
    if missing:
        raise BoxunetError(f"{folder}: the training case(s) {', '.join(missing[:5])} of fold {setup.fold} have no "
                           "complete raw files (images and boxes); stage 2 needs them for the fusion masks")
    return cases


class Stage2:
    """Stage 2 of one fold (see the module docstring), for the final network's ``setup`` and ``options``."""

    def __init__(self, setup: TrainingSetup, options: BoxThreeStageOptions, group: ProcessGroupInfo,
                 log: LogFile | None, previous_stage_folder: Path | None):
        self.setup, self.options, self.group, self.log = setup, options, group, log
        self.plans, self.configuration, self.folders = setup.plans, setup.configuration, setup.folders
        self.previous_stage_folder = previous_stage_folder
        self.folder = setup.output / "stage2"
        self.file_ending = read_json(self.folders.preprocessed / "dataset.json")["file_ending"]

    def _cases(self, case_ids: list[str]) -> PreprocessedCases:
        return PreprocessedCases(self.folders.preprocessed / self.configuration.data_identifier, case_ids)

    def _log(self, message: str) -> None:
        if self.log:
            self.log(f"stage 2: {message}")

    def group_settings(self, stage1: Path, subsets: list[list[str]]) -> dict:
        """What the group networks depend on (settings, and the stamps of every case's stage-1 target and
        preprocessed data): stage-2 results stored with anything else are made anew."""
        cases = self.setup.train_cases + self.setup.val_cases
        previous = self.previous_stage_folder
        data_folder = self.folders.preprocessed / self.configuration.data_identifier
        return {"group_networks": self.options.group_networks, "subsets": subsets,
                "group_epochs": self.options.group_epochs, "seed": self.options.seed,
                "group_loss": self.options.box_loss.removeprefix("v"),
                "iterations_per_epoch": self.options.iterations_per_epoch,
                "stage1_targets": {c: file_stamp(target_path(stage1, c)) for c in cases},
                "preprocessed_cases": {c: file_stamp(data_folder / f"{c}.json") for c in cases},
                "previous_stage": None if previous is None else
                {c: file_stamp(target_path(previous, c)) for c in cases}}

    def _prepare_folder(self, folder: Path, settings: dict) -> None:
        """Empty ``folder`` when it holds results of other settings, and record ``settings`` (main process; all
        ranks wait)."""
        record = folder / "settings.json"
        if self.group.is_main:
            if folder.is_dir() and (not record.is_file() or read_json(record) != settings):
                self._log(f"{folder} holds results of other settings; making them anew")
                shutil.rmtree(folder)
            folder.mkdir(parents=True, exist_ok=True)
            write_json(settings, record)
        barrier(self.group)

    def train_group(self, stage1: Path) -> list[nn.Module]:
        """Train (or resume, or reuse) the K group networks on the ``stage1`` target store; return them loaded
        with their final weights."""
        o = self.options
        subsets = group_subsets(self.setup.train_cases, o.group_networks, o.seed)
        self._prepare_folder(self.folder, self.group_settings(stage1, subsets))
        networks = []
        for index, subset in enumerate(subsets):
            # each group network starts from its own random initialization
            member_options = replace(o, epochs=o.group_epochs, seed=o.seed + 10 ** 6 * (index + 1))
            folder = self.folder / f"group_{index}"
            folder.mkdir(parents=True, exist_ok=True)
            if not (folder / "checkpoint_final.pth").is_file():
                member = BoxGroupMember(replace(self.setup, train_cases=subset, output=folder), member_options,
                                        self.group, stage1, self.previous_stage_folder)
                member.initialize()
                if (folder / "checkpoint_latest.pth").is_file():
                    member.load(folder / "checkpoint_latest.pth")
                self._log(f"group network {index + 1}/{len(subsets)} on {len(subset)} cases")
                # its epoch lines say which network speaks, and the time left includes the networks after it
                member.later_epochs = (len(subsets) - index - 1) * o.group_epochs + o.epochs
                if member.log:
                    member.log.prefix = f"stage 2, group network {index + 1}/{len(subsets)}: "
                member.run_training()
                del member
            networks.append(self.load_group_network(index))
        return networks

    def load_group_network(self, index: int) -> nn.Module:
        """Group network ``index`` with its final weights, in eval mode, for prediction."""
        final = self.folder / f"group_{index}" / "checkpoint_final.pth"
        if not final.is_file():
            raise BoxunetError(f"group network {index} is not trained: {final} is missing")
        state = load_checkpoint(final, map_location=self.group.device)
        network = BoxGroupMember.build_network(self.plans, self.configuration, self.plans.label_set.num_outputs,
                                               state).to(self.group.device)
        network.load_state_dict(state["network_weights"])
        network.set_deep_supervision(False)  # only the full-resolution output is used for prediction
        return network.eval()

    def group_logits(self, networks: list[nn.Module], image: torch.Tensor, boxes: list[Box]):
        """Logits of one preprocessed case's network input ``image`` (C, z, y, x) by each group network in turn,
        yielded one network at a time so that only one volume of logits is held. Only the regions around the
        case's ``boxes`` (grid voxels) are predicted (sliding window, no mirroring): fusion reads the networks'
        answers inside the boxes alone."""
        device = self.group.device
        patch_size = self.configuration.patch_size
        margin = [math.ceil(p * REGION_MARGIN) for p in patch_size]
        for network in networks:
            yield predict_box_regions(network, image, boxes, patch_size, self.plans.label_set.num_outputs, margin,
                                      mirror_axes=(), device=device, precision=resolve_precision(device))

    def raw_prediction(self, logits: torch.Tensor, properties: dict) -> np.ndarray:
        """A group network's label map of one case at the raw resolution, from its logits on the grid: decided
        like its validation (the class-weight prior removed) and brought back to the raw geometry like an
        exported prediction."""
        decided = BoxGroupMember.decision_logits(logits, 0)
        return logits_to_segmentation(revert_preprocessing(decided, properties, self.plans, self.configuration,
                                                           logits=True), self.plans)

    def group_predictor(self, networks: list[nn.Module],
                        network_input: Callable[[str, np.ndarray], np.ndarray]) -> GroupPredictor:
        """``predict(case_id)``: each group network's label map of a preprocessed case at the raw resolution
        (``group_logits`` of ``network_input(case_id, data)``, then ``raw_prediction``)."""

        def predict(case_id: str) -> list[np.ndarray]:
            data, _, properties = self._cases([case_id]).load(case_id)
            image = torch.from_numpy(network_input(case_id, np.asarray(data[:])))
            return [self.raw_prediction(logits, properties)
                    for logits in self.group_logits(networks, image, case_boxes(properties))]
        return predict

    def raw_fusion(self, case: CaseFiles, predictions: list[np.ndarray], parameters, stage1_method: str,
                   picture: Path) -> tuple[np.ndarray, np.ndarray, object, float]:
        """Eq. 5 and 6 at the raw resolution of one case: fusion label map, weight map, the raw geometry and the
        ConvCRF seconds; from the raw image, boxes, dense labels of the other classes and stage-1 mask (made with
        ``stage1_method`` and ``parameters``). Draws the case's boxes, stage-1 and fusion masks into ``picture``."""
        image, geometry = read_channels(list(case.images))
        pseudo = read_image(stage1_mask_path(self.folders.preprocessed, case.case_id, self.file_ending))[0]
        label_map = read_image(case.label)[0] if case.label is not None else None
        dense = (dense_label_map(label_map, self.plans.box_labels) if label_map is not None
                 else np.zeros(pseudo.shape, np.int8))
        boxes = read_boxes(case.boxes) if case.boxes is not None else []
        start = time.perf_counter()
        labels, weights = fusion_target(image, geometry.spacing, dense, pseudo, predictions, boxes,
                                        self.plans.box_labels, parameters, str(self.group.device), stage1_method)
        seconds = time.perf_counter() - start
        reference = label_map if label_map is not None and np.isin(label_map, self.plans.box_labels).any() else None
        write_box_picture(picture, image, geometry.spacing, boxes, {"stage 1": pseudo, "fusion": labels}, reference,
                          self.plans.label_set.value_names)
        return labels, weights, geometry, seconds

    def fusion_store(self, stage1: Path, predict: GroupPredictor, raw_cases: dict[str, CaseFiles]) -> Path:
        """Fusion masks and weight maps (Eq. 5, 6) of every training case from the group networks' predictions
        (``predict``), stage-1 targets for the validation cases, and each case's ConvCRF seconds; returns the
        folder. They are made at the raw resolution, where stage 1 made its masks (a box mapped to the grid is
        rounded outwards and the ConvCRF would start from a worse box), written there as images and brought
        onto the grid like labels (weights by nearest neighbour)."""
        folder = self.folder / "fusion"
        cases = self._cases(self.setup.train_cases + self.setup.val_cases)
        method, parameters = stage1_settings(self.folders.preprocessed)
        ending = self.file_ending
        # the group networks' settings are stage2/settings.json; fusion masks also depend on these
        prior = {"stage1_method": method, "network_logit": NETWORK_LOGIT, "union_logit": UNION_LOGIT}
        self._prepare_folder(folder, {"pseudo_mask_parameters": parameters.to_json(), "fusion_prior": prior,
                                      "class_prior_correction": True, "resolution": "raw"})
        seconds = 0.0
        for case_id in self.setup.train_cases[self.group.rank::self.group.world_size]:
            if has_target(folder, case_id):
                continue
            properties = cases.load(case_id)[2]
            labels, weights, geometry, crf_seconds = self.raw_fusion(raw_cases[case_id], predict(case_id), parameters,
                                                                     method, picture_path(folder, case_id))
            seconds += crf_seconds
            write_image(labels.astype(np.uint8), geometry, folder / f"{case_id}{ending}")
            write_image(weights.astype(np.uint8), geometry, folder / f"{case_id}_weights{ending}")
            write_json({"convcrf_seconds": round(crf_seconds, 3)}, folder / f"{case_id}_timing.json")
            write_target(folder, case_id, raw_labels_to_grid(labels, properties, self.plans, self.configuration),
                         raw_labels_to_grid(weights, properties, self.plans, self.configuration, order=0),
                         self.configuration.patch_size)
        if self.group.is_main:
            for case_id in self.setup.val_cases:  # monitored against their stage-1 masks, weight 1
                if not has_target(folder, case_id):
                    pseudo = np.asarray(open_target(stage1, case_id)[0])
                    write_target(folder, case_id, pseudo, np.ones_like(pseudo), self.configuration.patch_size)
            self._log(f"fusion masks of {len(self.setup.train_cases)} cases in {folder} "
                      f"(ConvCRF {seconds:.1f} s on this process)")
        barrier(self.group)
        return folder
