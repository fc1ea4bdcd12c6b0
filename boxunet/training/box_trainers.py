"""Trainers for datasets whose ``box_labels`` are given as boxes (see documentation/box_supervision.md).

* ``BoxThreeStage`` (seed 000): stage 1 pseudo masks (boxunet_pseudo_labels, ConvCRF), stage 2 group
  training of K networks and fusion masks with voxel weight maps, stage 3 the final network with
  voxel-wise weighted cross-entropy (VWCE). ``--k 0`` trains on the stage-1 masks with WCE.
* ``BoxFill``: every box voxel without a dense label is its box's label (Dice + CE).
* ``BoxIgnore``: the loss ignores box voxels without a dense label (nnU-Net's ignore-label baseline).
* ``PseudoMaskIgnoreBoxBackground`` (seed 002's segmentation loss): Dice + CE on the stage-1 pseudo masks
  (``boxunet_pseudo_labels``, any method, e.g. ``--method acol``), ignoring the box voxels they call background.
* ``FullySupervised``: the dense reference labels of the box labels (for comparison when they exist).

Dense labels of the other classes are trusted wherever they are given.
"""
import random
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from boxunet.boxes.fusion import NETWORK_LOGIT, UNION_LOGIT, dense_label_map, fusion_target
from boxunet.boxes.pseudo_masks import PseudoMaskParameters
from boxunet.boxes.stage1 import PseudoLabelRequest, generate_pseudo_labels, stage1_folder, stage1_mask_path
from boxunet.errors import BoxunetError
from boxunet.evaluation.metrics import dice
from boxunet.inference.export import logits_to_segmentation, revert_preprocessing
from boxunet.inference.precision import resolve_precision
from boxunet.inference.sliding_window import predict_sliding_window
from boxunet.io.atomic import read_json, write_json
from boxunet.io.boxes import box_mask, case_boxes, read_boxes
from boxunet.io.cases import CaseFiles, list_training_cases
from boxunet.io.checkpoint import load_checkpoint
from boxunet.io.dataset_json import load_dataset_json
from boxunet.io.images import Geometry, read_channels, read_image, write_image
from boxunet.paths import raw_root
from boxunet.preprocessing.grid_labels import (has_target, open_target, raw_labels_to_grid, store_raw_label_maps,
                                               target_path, write_target)
from boxunet.training.data.box_samplers import (BoxFillSampler, BoxIgnoreSampler, IgnoreBoxBackgroundSampler,
                                                StoredTargetSampler)
from boxunet.training.data.dataset import PreprocessedCases
from boxunet.training.distributed import barrier
from boxunet.training.losses import DiceCELoss, WeightedCELoss
from boxunet.training.trainer import Trainer

BOX_LOSSES = ("wce", "vwce", "wce_dice", "vwce_dice")
BACKGROUND_CLASS_WEIGHT = 0.2  # seed 000: 1.0 for the tumor, 0.2 for the background


def known_channel_loss_inputs(batch: dict, device: torch.device):
    """Targets from channel 0 and ignore masks where channel 1 (known) is 0, per deep-supervision output."""
    targets = [t[:, :1].to(device, non_blocking=True).long() for t in batch["target"]]
    ignore = [t[:, 1:2].to(device, non_blocking=True) < 0.5 for t in batch["target"]]
    return targets, ignore, None


class _BoxDatasetTrainer(Trainer):
    """A trainer for datasets with ``box_labels``; refuses others before training. Validation scores the dense
    labels when every case has them, else agreement with the stage-1 pseudo masks."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.plans.box_labels:
            raise BoxunetError(f"{type(self).__name__} needs a dataset with \"box_labels\" in dataset.json; "
                               "this one has none (use the standard Trainer)")
        self._validation_reference: Path | None = None

    @property
    def dataset_name(self) -> str:
        return self.preprocessed_folder.name

    def _cases(self, case_ids: list[str]) -> PreprocessedCases:
        return PreprocessedCases(self.preprocessed_folder / self.configuration.data_identifier, case_ids)

    def run_training(self) -> None:
        reference = self.validation_reference()  # checked before training, not found missing after it
        ending = self.dataset_json["file_ending"]
        missing = [c for c in self.val_cases if not (reference / f"{c}{ending}").is_file()]
        if missing:
            raise BoxunetError(f"validation of {', '.join(missing[:5])}: these cases have no dense labels of their "
                               f"boxes' labels, and their stage-1 pseudo masks are missing in {reference}; run "
                               f"boxunet_pseudo_labels -d {self.dataset_name} first")
        super().run_training()

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
            cases = self._cases(case_ids)
            self._validation_reference = dense
            for case_id in case_ids:
                path = dense / f"{case_id}{ending}"
                drawn = {box.label for box in case_boxes(cases.load(case_id)[2])}
                if not path.is_file() or not drawn <= set(np.unique(read_image(path)[0]).tolist()):
                    self._validation_reference = stage1_folder(self.dataset_name)
                    break
        return self._validation_reference


class BoxFill(_BoxDatasetTrainer):
    """Boxes filled with their label (the boxes themselves as masks), Dice + CE."""

    def sampler_options(self) -> dict:
        return {"sampler_class": BoxFillSampler}


class BoxIgnore(_BoxDatasetTrainer):
    """Dice + CE on the known voxels only: outside the boxes and on dense labels."""

    def sampler_options(self) -> dict:
        return {"sampler_class": BoxIgnoreSampler}

    def loss_inputs(self, batch: dict):
        return known_channel_loss_inputs(batch, self.device)


class _StoredTargetTrainer(_BoxDatasetTrainer):
    """Trains on a target store (label map, optional weight map per case) set in ``target_folder``."""

    target_folder: Path | None = None

    def sampler_options(self) -> dict:
        if self.target_folder is None:
            raise RuntimeError("target_folder must be set before the batch iterators are made")
        return {"sampler_class": StoredTargetSampler, "sampler_arguments": {"target_folder": self.target_folder}}

    def reference_store(self) -> tuple[Path | None, dict[str, list[int]]]:
        """Dense reference labels (box labels included) on this grid, from gt_segmentations, and the box labels
        each case's reference holds; (None, {}) when no label map holds a box label."""
        ending = self.dataset_json["file_ending"]
        files = {c: self.preprocessed_folder / "gt_segmentations" / f"{c}{ending}"
                 for c in self.train_cases + self.val_cases}
        if not all(path.is_file() for path in files.values()):
            return None, {}
        folder = self.preprocessed_folder / "pseudo_labels" / f"reference_{self.configuration.data_identifier}"
        index = folder / "box_labels_present.json"
        if self.group.is_main:
            store_raw_label_maps(folder, self._cases(list(files)), files, self.plans, self.configuration)
            present = read_json(index) if index.is_file() else {}
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
        raw_folder = stage1_folder(self.dataset_name)
        ending = self.dataset_json["file_ending"]
        case_ids = self.train_cases + self.val_cases
        files = {c: stage1_mask_path(self.dataset_name, c, ending) for c in case_ids}
        folder = self.preprocessed_folder / "pseudo_labels" / f"stage1_{self.configuration.data_identifier}"
        if not all(path.is_file() for path in files.values()):
            if self.group.distributed or not (raw_root() / self.dataset_name).is_dir():
                # every rank sees the same files, so every rank raises: nobody waits at a barrier
                raise BoxunetError(f"stage-1 pseudo labels are missing in {raw_folder}; run boxunet_pseudo_labels -d "
                                   f"{self.dataset_name} first (needs the raw dataset; multi-process training does "
                                   "not make them itself)")
            if self.log:
                self.log(f"stage 1: pseudo labels missing in {raw_folder}; running boxunet_pseudo_labels")
            threads = torch.get_num_threads()
            generate_pseudo_labels(PseudoLabelRequest(self.dataset_name, progress=self.options.progress_bar))
            torch.set_num_threads(threads)
        if self.group.is_main:
            store_raw_label_maps(folder, self._cases(case_ids), files, self.plans, self.configuration)
        barrier(self.group)
        return folder


class _PseudoMaskTrainer(_StoredTargetTrainer):
    """A trainer whose targets derive from the stage-1 pseudo masks."""


class FullySupervised(_StoredTargetTrainer):
    """The dense reference labels, box labels included (Dice + CE): the upper bound for the box trainers."""

    def run_training(self) -> None:
        self.target_folder = self.reference_store()[0]
        if self.target_folder is None:
            raise BoxunetError("FullySupervised needs label maps (labelsTr) that hold the box labels; this dataset's "
                               "hold none")
        super().run_training()


class PseudoMaskIgnoreBoxBackground(_PseudoMaskTrainer):
    """Dice + CE on the stage-1 pseudo masks, the box voxels they call background ignored (seed 002)."""

    def sampler_options(self) -> dict:
        return {"sampler_class": IgnoreBoxBackgroundSampler, "sampler_arguments": {"target_folder": self.target_folder}}

    def loss_inputs(self, batch: dict):
        return known_channel_loss_inputs(batch, self.device)

    def run_training(self) -> None:
        self.target_folder = self.stage1_store()
        super().run_training()


def box_class_weights(num_classes: int) -> list[float]:
    """Seed 000's cross-entropy class weights: background 0.2, every label 1.0."""
    return [BACKGROUND_CLASS_WEIGHT] + [1.0] * (num_classes - 1)


def correct_class_prior(logits: torch.Tensor, channel_axis: int = 0) -> torch.Tensor:
    """``logits`` minus log w_c of ``box_class_weights`` along ``channel_axis`` (logit adjustment): a network
    trained with class-weighted cross-entropy learns softmax outputs proportional to w_c p_c, so its argmax
    calls a voxel label c already where p_c > 0.2 p_background; removing the weights' log restores the argmax
    of p_c. Exact for (v)wce; with an added Dice term, which has no class weights, it is an approximation."""
    classes = logits.shape[channel_axis]
    offsets = -torch.tensor(box_class_weights(classes), dtype=logits.dtype, device=logits.device).log()
    shape = [1] * logits.ndim
    shape[channel_axis] = classes
    return logits + offsets.view(shape)


class _ClassWeightedDecision:
    """For trainers whose loss carries seed 000's class weights: predictions and the validation pseudo Dice use
    the prior-corrected logits (``correct_class_prior``)."""

    @classmethod
    def decision_logits(cls, logits: torch.Tensor, channel_axis: int) -> torch.Tensor:
        return correct_class_prior(logits, channel_axis)


class BoxGroupMember(_ClassWeightedDecision, _StoredTargetTrainer):
    """A stage-2 group network: WCE (plus Dice with a ``*_dice`` loss) on the stage-1 masks of its subset."""

    def segmentation_loss(self):
        # the stage-1 masks have no weight maps: vwce -> wce, vwce_dice -> wce_dice
        return box_loss(self.options.box_loss.removeprefix("v"), self.num_outputs, self.configuration.batch_dice)


def box_loss(name: str, num_classes: int, batch_dice: bool) -> torch.nn.Module:
    """The loss ``name`` (one of ``BOX_LOSSES``) of one output: cross-entropy with the class weights of seed 000
    (``box_class_weights``), plus soft Dice for the ``*_dice`` variants. Voxel weights, when the trainer
    passes them (``vwce*``), multiply both terms."""
    if name not in BOX_LOSSES:
        raise BoxunetError(f"--loss {name!r}: choose one of {', '.join(BOX_LOSSES)}")
    class_weights = box_class_weights(num_classes)
    if name.endswith("_dice"):
        return DiceCELoss(batch_dice=batch_dice, class_weights=class_weights)
    return WeightedCELoss(class_weights)


def group_subsets(case_ids: list[str], k: int, seed: int) -> list[list[str]]:
    """``case_ids`` split into ``k`` disjoint subsets of (almost) equal size, shuffled with ``seed``."""
    if k < 1 or k > len(case_ids):
        raise BoxunetError(f"--k {k}: need 1 <= k <= the {len(case_ids)} training cases of the fold")
    shuffled = sorted(case_ids)
    random.Random(seed).shuffle(shuffled)
    return [sorted(shuffled[i::k]) for i in range(k)]


class BoxThreeStage(_ClassWeightedDecision, _PseudoMaskTrainer):
    """Seed 000's three stages; the final network is this trainer's own."""

    reads_options = ("group_networks", "group_epochs", "box_loss")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)  # builds the loss, so an unknown --loss is refused here
        if self.regions:
            raise BoxunetError("BoxThreeStage trains label maps; region-based datasets are not supported")
        if self.options.group_networks < 0:
            raise BoxunetError(f"--k {self.options.group_networks}: give 0 (no stage 2) or more group networks")
        if self.options.group_epochs is None:
            # fixed when the run starts (and recorded in its checkpoints): `--c --epochs N` later extends the
            # final network without changing stage 2
            self.options = replace(self.options, group_epochs=self.options.epochs)

    @property
    def loss_name(self) -> str:
        """``--loss``, without the voxel weights when ``--k 0`` leaves no weight maps."""
        return self.options.box_loss if self.options.group_networks > 0 else self.options.box_loss.removeprefix("v")

    @property
    def uses_weights(self) -> bool:
        return self.loss_name.startswith("vwce")

    def segmentation_loss(self):
        return box_loss(self.loss_name, self.num_outputs, self.configuration.batch_dice)

    def loss_inputs(self, batch: dict):
        targets = [t[:, :1].to(self.device, non_blocking=True).long() for t in batch["target"]]
        if not self.uses_weights:
            return targets, None, None
        return targets, None, [t[:, 1:2].to(self.device, non_blocking=True) for t in batch["target"]]

    @property
    def stage2_folder(self) -> Path:
        return self.output_folder / "stage2"

    def run_training(self) -> None:
        self.prepare_previous_stage()  # a cascade's group networks take the previous stage as input too
        stage1 = self.stage1_store()
        reference = self.reference_store()  # every rank: it synchronizes them
        self.target_folder, raw_cases = stage1, None
        if self.options.group_networks > 0:
            raw_cases = self.raw_training_cases()  # checked before the group networks train
            networks = self._train_group(stage1)
            self.target_folder = self._fusion_store(stage1, networks, raw_cases)
            del networks
        if self.group.is_main:
            self._write_box_report(stage1, reference, raw_cases)
        super().run_training()

    # ------------------------------------------------------------------------------------ stage 2
    def _stage2_settings(self, stage1: Path, subsets: list[list[str]]) -> dict:
        """What the group networks depend on; stored stage-2 results made with other settings are not reused."""
        newest = max(target_path(stage1, c).stat().st_mtime_ns for c in self.train_cases + self.val_cases)
        return {"group_networks": self.options.group_networks, "subsets": subsets,
                "group_epochs": self.options.group_epochs, "seed": self.options.seed,
                "group_loss": self.loss_name.removeprefix("v"),
                "iterations_per_epoch": self.options.iterations_per_epoch, "stage1_newest_mtime_ns": newest,
                "previous_stage_newest_mtime_ns": None if self.previous_stage_folder is None else
                max(target_path(self.previous_stage_folder, c).stat().st_mtime_ns
                    for c in self.train_cases + self.val_cases)}

    def _prepare_folder(self, folder: Path, settings: dict) -> None:
        """Empty ``folder`` when it holds results of other settings, and record ``settings`` (main process; all
        ranks wait)."""
        record = folder / "settings.json"
        if self.group.is_main:
            if folder.is_dir() and (not record.is_file() or read_json(record) != settings):
                if self.log:
                    self.log(f"stage 2: {folder} holds results of other settings; making them anew")
                shutil.rmtree(folder)
            folder.mkdir(parents=True, exist_ok=True)
            write_json(settings, record)
        barrier(self.group)

    def stage1_settings(self) -> tuple[str, PseudoMaskParameters]:
        """How the stage-1 masks were made (``boxunet_pseudo_labels --method``, which shapes the fusion prior) and
        their parameters (tuned or given), which fusion masks reuse; from stage 1's report.json."""
        report = stage1_folder(self.dataset_name) / "report.json"
        if not report.is_file():
            return "convcrf", PseudoMaskParameters()
        record = read_json(report)
        return record["method"], PseudoMaskParameters.from_json(record["parameters"])

    def _train_group(self, stage1: Path) -> list[torch.nn.Module]:
        """Train (or resume, or reuse) the K group networks; return them loaded with their final weights."""
        o = self.options
        subsets = group_subsets(self.train_cases, o.group_networks, o.seed)
        self._prepare_folder(self.stage2_folder, self._stage2_settings(stage1, subsets))
        networks = []
        for index, subset in enumerate(subsets):
            # each group network starts from its own random initialization
            member_options = replace(o, epochs=o.group_epochs, seed=o.seed + 10 ** 6 * (index + 1))
            folder = self.stage2_folder / f"group_{index}"
            folder.mkdir(parents=True, exist_ok=True)
            final = folder / "checkpoint_final.pth"
            if not final.is_file():
                member = BoxGroupMember(self.plans, self.configuration, self.fold, self.preprocessed_folder, folder,
                                        subset, self.val_cases, member_options, self.group)
                member.target_folder, member.previous_stage_folder = stage1, self.previous_stage_folder
                if (folder / "checkpoint_latest.pth").is_file():
                    member.load(folder / "checkpoint_latest.pth")
                if self.log:
                    self.log(f"stage 2: group network {index + 1}/{len(subsets)} on {len(subset)} cases")
                member.run_training()
                del member
            networks.append(self.load_group_network(index))
        return networks

    def load_group_network(self, index: int) -> torch.nn.Module:
        """Group network ``index`` with its final weights, in eval mode, for prediction."""
        final = self.stage2_folder / f"group_{index}" / "checkpoint_final.pth"
        if not final.is_file():
            raise BoxunetError(f"group network {index} is not trained: {final} is missing")
        network = self.build_network(self.plans, self.configuration, self.num_outputs).to(self.device)
        network.load_state_dict(load_checkpoint(final, map_location=self.device)["network_weights"])
        network.set_deep_supervision(False)  # only the full-resolution output is used for prediction
        return network.eval()

    def group_logits(self, networks: list[torch.nn.Module], case_id: str, image: np.ndarray):
        """Logits of one preprocessed case ``image`` (C, z, y, x) by each group network in turn (sliding window,
        no mirroring), yielded one network at a time so that only one volume of logits is held."""
        network_input = torch.from_numpy(self.network_input(case_id, image))
        for network in networks:
            yield predict_sliding_window(network, network_input, self.configuration.patch_size, self.num_outputs,
                                         mirror_axes=(), device=self.device, precision=resolve_precision(self.device))

    def raw_prediction(self, logits: torch.Tensor, properties: dict) -> np.ndarray:
        """A group network's label map of one case at the raw resolution, from its logits on the grid: decided
        like its validation (``BoxGroupMember.decision_logits``: the class-weight prior removed) and brought back
        to the raw geometry like an exported prediction."""
        decided = BoxGroupMember.decision_logits(logits, 0)
        return logits_to_segmentation(revert_preprocessing(decided, properties, self.plans, self.configuration,
                                                           logits=True), self.plans)

    def raw_training_cases(self) -> dict[str, CaseFiles]:
        """The raw files of the fold's training cases (fusion runs on the raw images, like stage 1)."""
        folder = raw_root() / self.dataset_name
        if not folder.is_dir():
            raise BoxunetError(f"stage 2 makes its fusion masks at the raw resolution, like stage 1, and needs the "
                               f"raw dataset {folder}; set boxunet_raw to the folder holding it")
        cases = {case.case_id: case for case in list_training_cases(folder, load_dataset_json(folder))[0]}
        missing = [c for c in self.train_cases if c not in cases]
        if missing:
            raise BoxunetError(f"{folder}: the training case(s) {', '.join(missing[:5])} of fold {self.fold} have no "
                               "complete raw files (images and boxes); stage 2 needs them for the fusion masks")
        return cases

    def raw_fusion(self, case: CaseFiles, predictions: list[np.ndarray], parameters: PseudoMaskParameters,
                   stage1_method: str) -> tuple[np.ndarray, np.ndarray, Geometry, float]:
        """Eq. 5 and 6 at the raw resolution of one case: fusion label map, weight map, the raw geometry and the
        ConvCRF seconds; from the raw image, boxes, dense labels of the other classes and stage-1 mask (made with
        ``stage1_method`` and ``parameters``)."""
        image, geometry = read_channels(list(case.images))
        pseudo = read_image(stage1_mask_path(self.dataset_name, case.case_id, self.dataset_json["file_ending"]))[0]
        dense = (dense_label_map(read_image(case.label)[0], self.plans.box_labels) if case.label is not None
                 else np.zeros(pseudo.shape, np.int8))
        boxes = read_boxes(case.boxes) if case.boxes is not None else []
        start = time.perf_counter()
        labels, weights = fusion_target(image, geometry.spacing, dense, pseudo, predictions, boxes,
                                        self.plans.box_labels, parameters, str(self.device), stage1_method)
        return labels, weights, geometry, time.perf_counter() - start

    def _fusion_store(self, stage1: Path, networks: list[torch.nn.Module],
                      raw_cases: dict[str, CaseFiles]) -> Path:
        """Fusion masks and weight maps (Eq. 5, 6) of every training case (stage-1 targets for validation
        cases), and each case's ConvCRF seconds (``<case>_timing.json``); returns the folder. They are made at the
        raw resolution, where stage 1 made its masks (a box mapped to the grid is rounded outwards and the
        ConvCRF would start from a worse box), written there as images (``<case><ending>`` and
        ``<case>_weights<ending>``) and brought onto the grid like labels (weights by nearest neighbour)."""
        folder = self.stage2_folder / "fusion"
        cases = self._cases(self.train_cases + self.val_cases)
        method, parameters = self.stage1_settings()
        ending = self.dataset_json["file_ending"]
        # the group networks' settings are stage2/settings.json; fusion masks also depend on these
        prior = {"stage1_method": method, "network_logit": NETWORK_LOGIT, "union_logit": UNION_LOGIT}
        self._prepare_folder(folder, {"pseudo_mask_parameters": parameters.to_json(), "fusion_prior": prior,
                                      "class_prior_correction": True, "resolution": "raw"})
        seconds = 0.0
        for case_id in self.train_cases[self.group.rank::self.group.world_size]:
            if has_target(folder, case_id):
                continue
            data, _, properties = cases.load(case_id)
            predictions = [self.raw_prediction(logits, properties)
                           for logits in self.group_logits(networks, case_id, np.asarray(data[:]))]
            labels, weights, geometry, crf_seconds = self.raw_fusion(raw_cases[case_id], predictions, parameters,
                                                                     method)
            seconds += crf_seconds
            write_image(labels.astype(np.uint8), geometry, folder / f"{case_id}{ending}")
            write_image(weights.astype(np.uint8), geometry, folder / f"{case_id}_weights{ending}")
            write_json({"convcrf_seconds": round(crf_seconds, 3)}, folder / f"{case_id}_timing.json")
            write_target(folder, case_id, raw_labels_to_grid(labels, properties, self.plans, self.configuration),
                         raw_labels_to_grid(weights, properties, self.plans, self.configuration, order=0),
                         self.configuration.patch_size)
        if self.group.is_main:
            for case_id in self.val_cases:  # monitored against their stage-1 masks, weight 1
                if not has_target(folder, case_id):
                    pseudo = np.asarray(open_target(stage1, case_id)[0])
                    write_target(folder, case_id, pseudo, np.ones_like(pseudo), self.configuration.patch_size)
            if self.log:
                self.log(f"stage 2: fusion masks of {len(self.train_cases)} cases in {folder} "
                         f"(ConvCRF {seconds:.1f} s on this process)")
        barrier(self.group)
        return folder

    # ------------------------------------------------------------------------------------ report
    def _report_masks(self, stage1: Path, reference: tuple[Path | None, dict], raw_cases: dict | None):
        """The resolution the report scores at and, per training case, (case id, reference label map or None,
        stage-1 label map, fusion label map or None, boxes): at the raw resolution, where stage 1 and fusion make
        their masks, when the raw dataset is there (``raw_cases``, listed by stage 2 or here); else on the grid
        (boxes rounded outwards)."""
        fusion = self.stage2_folder / "fusion" if self.options.group_networks > 0 else None
        ending = self.dataset_json["file_ending"]
        if raw_cases is None:
            try:  # without stage 2, a missing raw dataset or case means the grid
                raw_cases = self.raw_training_cases()
            except BoxunetError:
                pass
        if raw_cases is not None:

            def raw_masks(case_id):
                case = raw_cases[case_id]
                return (case_id, read_image(case.label)[0] if case.label is not None else None,
                        read_image(stage1_mask_path(self.dataset_name, case_id, ending))[0],
                        read_image(fusion / f"{case_id}{ending}")[0] if fusion else None,
                        read_boxes(case.boxes) if case.boxes is not None else [])
            return "raw", map(raw_masks, self.train_cases)
        reference_folder, present = reference
        cases = self._cases(self.train_cases)

        def grid_masks(case_id):
            truth = (np.asarray(open_target(reference_folder, case_id)[0])
                     if reference_folder and present.get(case_id) else None)
            return (case_id, truth, np.asarray(open_target(stage1, case_id)[0]),
                    np.asarray(open_target(fusion, case_id)[0]) if fusion else None,
                    case_boxes(cases.load(case_id)[2]))
        return self.configuration.data_identifier, map(grid_masks, self.train_cases)

    def _case_seconds(self, case_id: str) -> dict:
        """A case's stage-1 seconds (its pseudo-label record) and fusion ConvCRF seconds, where recorded."""
        stage1_record = stage1_folder(self.dataset_name) / f"{case_id}.json"
        fusion_record = self.stage2_folder / "fusion" / f"{case_id}_timing.json"
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
        rows = []
        for case_id, truth, pseudo, fused, boxes in masks:
            row = {"case_id": case_id, "seconds": self._case_seconds(case_id)}
            for label in self.plans.box_labels:
                entry = {"boxes": sum(1 for b in boxes if b.label == label)}
                if truth is not None and (truth == label).any():
                    reference_mask = truth == label
                    entry["dice_boxes"] = dice(box_mask(truth.shape, boxes, label), reference_mask)
                    entry["dice_stage1"] = dice(pseudo == label, reference_mask)
                    if fused is not None:
                        entry["dice_fusion"] = dice(fused == label, reference_mask)
                row[str(label)] = entry
            rows.append(row)
        means = {}
        for label in self.plans.box_labels:
            entries = [row[str(label)] for row in rows]
            means[str(label)] = {key: round(float(np.nanmean([e[key] for e in entries if key in e])), 4)
                                 for key in ("dice_boxes", "dice_stage1", "dice_fusion")
                                 if any(key in e for e in entries)}
        seconds = {stage: round(float(np.mean([row["seconds"][stage] for row in rows if stage in row["seconds"]])), 3)
                   for stage in ("stage1", "fusion") if any(stage in row["seconds"] for row in rows)}
        write_json({"trainer": type(self).__name__, "group_networks": self.options.group_networks,
                    "loss": self.loss_name, "resolution": resolution, "seconds_per_case": seconds,
                    "mean": means, "cases": rows},
                   self.output_folder / "box_report.json")
