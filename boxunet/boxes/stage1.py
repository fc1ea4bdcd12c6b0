"""``boxunet_pseudo_labels``: stage-1 pseudo label maps of a raw box dataset, with a report.

Every training case gets ``<preprocessed>/DatasetXXX/pseudo_labels/stage1/<case><ending>``: the case's
dense labels where given and its box labels inferred from the boxes (boxunet.boxes.pseudo_masks), with
the raw image's geometry, plus ``<case>.json`` (its metrics and the parameters used). ``report.json``
collects them: per case and mean Dice of the boxes and of the pseudo masks against the dense reference
labels of the box labels when the dataset has them (they are read for the report only). An interrupted
run resumes: a case whose outputs exist with the same method and parameters, made from the same unchanged files
(image, label map, box file: boxunet.io.stamps), is not recomputed; an edited box remakes its case's masks.

``--method acol`` first trains one region miner per box label that has a box in some case on every case's slices
([Fan 2022], boxunet.boxes.region_mining), stored as ``region_miner_label<L>.pth`` and reused while the cases
(their boxes and image files) and the mining parameters are the same; a case's masks are recomputed whenever a
miner changes. Each case's boxes get their fused ACoL maps, refined by the ConvCRF. Its report adds the Dice of
the CAM (branch A) and of the fused map alone, each thresholded at 0.5, and of the default ``convcrf`` method's
masks of the same case (made for the report only).

``--method template`` first learns one shape template per box label from every case (a network trained from
the boxes, then rounds of ConvCRF masks; boxunet.boxes.shape_templates), stored as ``shape_templates.json``
(the network as ``box_network.pth``) and reused on the same terms as the miners; each case's ConvCRF then takes its label's template as shape prior.

Everything that can be wrong with the input is checked before the first file is written.
"""
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from boxunet.boxes.case_masks import case_pseudo_masks
from boxunet.boxes.pseudo_masks import METHODS, PseudoMaskParameters, pseudo_masks
from boxunet.boxes.region_mining import (RegionMiningParameters, normalize_channels, save_region_miner,
                                         stored_region_miner, train_region_miner, training_slices)
from boxunet.boxes.shape_templates import TemplateCase, TemplateParameters, learn_shape_templates
from boxunet.errors import BoxunetError, DatasetError, Problem
from boxunet.evaluation.box_report import box_label_scores, mean_scores
from boxunet.evaluation.pictures import picture_path, write_box_picture
from boxunet.io.atomic import read_json, write_json
from boxunet.io.boxes import Box, box_mask
from boxunet.io.cases import CaseFiles
from boxunet.io.dataset_json import DatasetDescription, load_dataset_json
from boxunet.io.dataset_locator import DatasetFolders, find_dataset_folder
from boxunet.io.images import read_channels, read_image, write_image
from boxunet.io.locks import exclusive_folder
from boxunet.io.stamps import file_stamp, json_digest
from boxunet.io.verification import case_header_problems, image_data_problems, verify_headers
from boxunet.parallel import default_num_processes, map_in_processes, share_of
from boxunet.paths import raw_root

STAGE1_FOLDER = Path("pseudo_labels") / "stage1"


@dataclass(frozen=True)
class PseudoLabelRequest:
    """What ``generate_pseudo_labels`` computes and how."""

    dataset: str
    method: str = "convcrf"
    parameters: PseudoMaskParameters = field(default_factory=PseudoMaskParameters)
    num_processes: int = 1
    device: str = "cpu"
    overwrite: bool = False
    progress: bool = True
    tuning: dict | None = None
    mining: RegionMiningParameters = field(default_factory=RegionMiningParameters)
    templates: TemplateParameters = field(default_factory=TemplateParameters)
    folders: DatasetFolders | None = None  # the dataset's folders when the caller holds them (else found by name)
    num_parts: int = 1  # --num-parts: this run makes the masks of every num_parts-th case, from part_id on
    part_id: int = 0
    pictures: bool = True  # a PNG per case in pictures/ (boxunet.evaluation.pictures)


@dataclass(frozen=True)
class _CaseJob:
    case: CaseFiles
    boxes: tuple[Box, ...]
    box_labels: tuple[int, ...]
    reference_labels: tuple[int, ...]  # the box labels this case's label map holds (its references)
    output: Path
    method: str
    parameters: PseudoMaskParameters
    device: str
    mining: RegionMiningParameters | None = None  # with method "acol"
    miner_files: tuple[tuple[int, str], ...] = ()  # (box label, region miner file) with method "acol"
    miner_digests: tuple[tuple[int, str], ...] = ()  # (box label, digest of what its miner is trained on)
    templates: TemplateParameters | None = None  # with method "template"
    template_file: str | None = None  # with method "template"
    template_digest: str | None = None  # digest of what the templates are learned from
    label_names: tuple[tuple[int, str], ...] | None = None  # (box label, name): draw the case's picture


def stage1_folder(preprocessed_dataset: Path) -> Path:
    """Where the stage-1 pseudo label maps of a dataset go, in its preprocessed folder."""
    return Path(preprocessed_dataset) / STAGE1_FOLDER


def stage1_mask_path(preprocessed_dataset: Path, case_id: str, file_ending: str) -> Path:
    """The stage-1 pseudo label map of one case (raw geometry)."""
    return stage1_folder(preprocessed_dataset) / f"{case_id}{file_ending}"


def stage1_settings(preprocessed_dataset: Path) -> tuple[str, PseudoMaskParameters]:
    """How the stage-1 masks were made (``--method``) and their parameters (tuned or given), from report.json;
    the defaults when there is no report."""
    report = stage1_folder(preprocessed_dataset) / "report.json"
    if not report.is_file():
        return "convcrf", PseudoMaskParameters()
    record = read_json(report)
    return record["method"], PseudoMaskParameters.from_json(record["parameters"])


def changed_since_stage1(preprocessed_dataset: Path, cases: list[CaseFiles]) -> list[str]:
    """The cases whose files (image, label map, box file) changed after their stage-1 masks were made."""
    folder = stage1_folder(preprocessed_dataset)
    changed = []
    for case in cases:
        record_file = folder / f"{case.case_id}.json"
        inputs = read_json(record_file).get("settings", {}).get("inputs") if record_file.is_file() else None
        if inputs is not None and inputs != case.input_stamps():
            changed.append(case.case_id)
    return changed


def _label_problems(case: CaseFiles, boxes: list[Box], description: DatasetDescription) -> tuple[list[Problem], list[int]]:
    """Problems (box-label voxels outside every box of their label) and the box labels present in the label map."""
    if case.label is None:
        return [], []
    labels, _ = read_image(case.label)
    problems, present = [], []
    for label in description.box_labels:
        voxels = labels == label
        if not voxels.any():
            continue
        present.append(label)
        outside = int(np.count_nonzero(voxels & ~box_mask(labels.shape, boxes, label)))
        if outside:
            problems.append(Problem(case.case_id, str(case.label),
                                    f"{outside} voxel(s) of box label {label} lie outside every box of label {label}: "
                                    "the labels contradict the boxes (fix the boxes, e.g. boxunet_labels_to_boxes)"))
    return problems, present


def _check_case(item: tuple[CaseFiles, DatasetDescription]) -> tuple[list[Problem], list[Box], list[int]]:
    """Every problem of one case (headers, boxes, NaN voxels, labels outside their boxes), its boxes and the box
    labels its label map holds. The images are read here and again when the case is computed: the price of
    reporting every bad case before the first file is written."""
    case, description = item
    problems, boxes = case_header_problems(case, description)
    if problems:
        return problems, boxes, []
    for path in case.images:
        problems += image_data_problems(case.case_id, path, read_image(path)[0])
    label_problems, present = _label_problems(case, boxes, description)
    return problems + label_problems, boxes, present


def _case_metrics(result: np.ndarray, reference: np.ndarray | None, boxes: tuple[Box, ...],
                  box_labels: tuple[int, ...], map_masks: dict[str, dict[int, np.ndarray]] | None = None) -> dict:
    """Per box label: box count, pseudo-mask voxels and, against a reference that holds the label, the Dice of the
    boxes, of the pseudo mask and of every ``map_masks`` entry (``dice_<name>``; per label, a mask from
    localization maps)."""
    metrics = {}
    for label in box_labels:
        pseudo_mask = result == label
        masks = {"pseudo_mask": pseudo_mask, **{name: by_label[label] for name, by_label in (map_masks or {}).items()}}
        scores = box_label_scores(reference, list(boxes), label, masks)
        metrics[str(label)] = {"boxes": scores.pop("boxes"), "pseudo_mask_voxels": int(np.count_nonzero(pseudo_mask)),
                               **scores}
    return metrics


def _outputs(job: _CaseJob) -> tuple[Path, Path]:
    return job.output, job.output.parent / f"{job.case.case_id}.json"


def _settings(job: _CaseJob) -> dict:
    """What a case's masks are made from: the method, its parameters and the case's files (a box edited since
    makes the case's masks anew)."""
    settings = {"method": job.method, "parameters": job.parameters.to_json(), "inputs": job.case.input_stamps()}
    if job.method == "acol":  # a case's masks depend on the miners, which depend on every case
        settings.update(mining=job.mining.to_json(), miners={str(label): d for label, d in job.miner_digests})
    if job.method == "template":  # likewise for the templates
        settings.update(templates=job.template_digest)
    return settings


def _case_inputs(jobs: list[_CaseJob], label: int | None = None) -> dict:
    """Every case's boxes (of ``label``, or all) and its image files' stamps (boxunet.io.stamps)."""
    return {job.case.case_id: {"boxes": [b.to_json() for b in job.boxes if label is None or b.label == label],
                               "images": [file_stamp(f) for f in job.case.images]} for job in jobs}


def miner_settings(jobs: list[_CaseJob], label: int) -> dict:
    """What the region miner of ``label`` is trained on: the mining parameters, and every case's boxes of the
    label and image files' stamps."""
    return {"label": label, "mining": jobs[0].mining.to_json(), "cases": _case_inputs(jobs, label)}


def template_settings(jobs: list[_CaseJob]) -> dict:
    """What the shape templates are learned from: their parameters, the ConvCRF's, and every case's boxes and
    image and label files' stamps (the rounds keep the dense labels of other classes)."""
    labels = {job.case.case_id: file_stamp(job.case.label) for job in jobs if job.case.label is not None}
    return {"templates": jobs[0].templates.to_json(), "crf": jobs[0].parameters.to_json(),
            "cases": _case_inputs(jobs), "dense_labels": labels}


def _finished(job: _CaseJob) -> dict | None:
    image_file, record_file = _outputs(job)
    if not (image_file.exists() and record_file.exists()):
        return None
    record = read_json(record_file)
    return record if record.get("settings") == _settings(job) else None


def _run_case(job: _CaseJob) -> dict:
    done = _finished(job)
    if done is not None:
        return done
    image, geometry = read_channels(list(job.case.images))
    reference = read_image(job.case.label)[0] if job.case.label is not None else None
    start = time.perf_counter()
    result, map_masks = case_pseudo_masks(image, geometry.spacing, job.boxes, job.box_labels, reference, job.method,
                                          job.parameters, job.device, job.template_file, job.miner_files)
    seconds = time.perf_counter() - start
    if job.method == "acol" and reference is not None and np.isin(reference, job.box_labels).any():
        # the report sets ACoL's masks beside those of the default method on the same case
        convcrf = pseudo_masks(image, geometry.spacing, list(job.boxes), list(job.box_labels), reference, "convcrf",
                               job.parameters, job.device)
        map_masks["convcrf"] = {label: convcrf == label for label in job.box_labels}
    record = {"case_id": job.case.case_id, "settings": _settings(job), "seconds": round(seconds, 3),
              "labels": _case_metrics(result, reference, job.boxes, job.box_labels, map_masks)}
    image_file, record_file = _outputs(job)
    write_image(result.astype(np.uint8), geometry, image_file)
    write_json(record, record_file)
    if job.label_names is not None:
        write_box_picture(picture_path(image_file.parent, job.case.case_id), image, geometry.spacing, list(job.boxes),
                          {"stage 1": result}, reference if job.reference_labels else None, dict(job.label_names))
    return record


def _means(records: list[dict], box_labels: tuple[int, ...]) -> dict:
    means = {}
    for label in box_labels:
        entries = [r["labels"][str(label)] for r in records]
        summary = {"seconds_per_case": round(float(np.mean([r["seconds"] for r in records])), 3)}
        for key, value in mean_scores(entries, ("dice_boxes", "dice_cam", "dice_acol", "dice_convcrf",
                                                "dice_pseudo_mask")).items():
            summary[key] = value
            summary["cases_with_reference"] = sum(1 for e in entries if key in e and not np.isnan(e[key]))
        means[str(label)] = summary
    return means


def plan_jobs(request: PseudoLabelRequest) -> tuple[DatasetFolders, list[_CaseJob]]:
    """Verify the dataset (headers, boxes, labels against boxes) and list one job per training case."""
    if request.method not in METHODS:
        raise BoxunetError(f"unknown method {request.method!r}; choose one of {', '.join(METHODS)}")
    folders = request.folders or DatasetFolders.named(find_dataset_folder(request.dataset, raw_root()).name)
    folder = folders.require_raw("boxunet_pseudo_labels")
    description = load_dataset_json(folder)
    if not description.box_labels:
        raise BoxunetError(f"{folder / 'dataset.json'}: no \"box_labels\": this dataset has no boxes to turn into "
                           "pseudo masks (see documentation/box_supervision.md)")
    cases = verify_headers(folder, description)
    if not cases:
        raise BoxunetError(f"{folder}: no training cases to make pseudo labels for")
    checks = map_in_processes(_check_case, [(case, description) for case in cases], request.num_processes,
                              "check", progress=request.progress)
    problems = [p for case_problems, _, _ in checks for p in case_problems]
    if problems:
        raise DatasetError(problems, header="pseudo labels: the boxes and labels disagree")
    parameters = request.parameters
    if parameters.tightness and not description.tight_boxes:
        parameters = replace(parameters, tightness=False)  # the tightness prior holds for tight boxes only
    output_folder = stage1_folder(folders.preprocessed)
    names = tuple((label, description.label_set.value_names.get(label, f"label {label}"))
                  for label in description.box_labels)
    # a box label without a box in any case has nothing to mine and no box to map: it gets no miner
    mined = sorted({box.label for _, boxes, _ in checks for box in boxes})
    if request.method == "acol" and not mined:
        raise BoxunetError(f"{folder}: --method acol: no training case has a box to mine regions from")
    miner_files = tuple((label, str(output_folder / f"region_miner_label{label}.pth"))
                        for label in mined) if request.method == "acol" else ()
    jobs = [_CaseJob(case, tuple(boxes), tuple(description.box_labels), tuple(present),
                     stage1_mask_path(folders.preprocessed, case.case_id, description.file_ending), request.method,
                     parameters, request.device, request.mining if request.method == "acol" else None,
                     miner_files, label_names=names if request.pictures else None)
            for case, (_, boxes, present) in zip(cases, checks)]
    if request.method == "acol":
        digests = tuple((label, json_digest(miner_settings(jobs, label))) for label in mined)
        jobs = [replace(job, miner_digests=digests) for job in jobs]
    if request.method == "template":
        jobs = [replace(job, templates=request.templates, template_file=str(output_folder / "shape_templates.json"))
                for job in jobs]
        digest = json_digest(template_settings(jobs))
        jobs = [replace(job, template_digest=digest) for job in jobs]
    return folders, jobs


def prepare_region_miners(jobs: list[_CaseJob], progress: bool) -> dict[str, dict]:
    """Train (or keep) the region miner of every box label on the slices of every job's case; per label,
    whether it was trained now and its training losses per epoch."""
    wanted = {label: (path, miner_settings(jobs, label)) for label, path in jobs[0].miner_files}
    stored = {label: stored_region_miner(Path(path)) for label, (path, _) in wanted.items()}
    report = {str(label): {"trained_now": False, "losses": stored[label][1]} for label, (_, settings) in wanted.items()
              if stored[label] is not None and stored[label][0] == settings}
    todo = {label: item for label, item in wanted.items() if str(label) not in report}
    if not todo:
        return report
    samples, channels = {label: [] for label in todo}, None
    for job in jobs:  # every case is read once for all labels
        image, _ = read_channels(list(job.case.images))
        normalized, channels = normalize_channels(image), image.shape[0]
        for label in todo:
            samples[label] += training_slices(normalized, list(job.boxes), label, job.mining.max_slices_per_box)
    for label, (path, settings) in todo.items():
        miner, losses = train_region_miner(samples.pop(label), channels, jobs[0].mining, torch.device(jobs[0].device),
                                           progress, f"region miner, label {label}")
        save_region_miner(miner, settings, losses, Path(path))
        report[str(label)] = {"trained_now": True, "losses": losses}
    return report


def prepare_shape_templates(jobs: list[_CaseJob], num_processes: int, progress: bool) -> dict:
    """Learn (or keep) the shape templates of every box label from every job's case; whether they were learned
    now, and the learning report. The box network is kept in ``box_network.pth`` while the cases and its
    parameters stay the same (a run interrupted in the rounds does not train it again)."""
    path, digest = Path(jobs[0].template_file), jobs[0].template_digest
    stored = read_json(path) if path.is_file() else None
    if stored is not None and stored.get("digest") == digest:
        return {"learned_now": False, **stored["report"]}
    cases = [TemplateCase(tuple(str(f) for f in job.case.images), job.boxes,
                          str(job.case.label) if job.case.label is not None else None) for job in jobs]
    network_digest = json_digest({"network": jobs[0].templates.network.to_json(), "cases": _case_inputs(jobs)})
    templates, report = learn_shape_templates(cases, jobs[0].box_labels, jobs[0].templates, jobs[0].parameters,
                                              path.with_name("box_network.pth"), network_digest, jobs[0].device,
                                              num_processes, progress)
    write_json({"digest": digest, "settings": jobs[0].templates.to_json(), "report": report,
                "templates": {str(label): np.round(t, 4).tolist() for label, t in templates.items()}}, path)
    return {"learned_now": True, **report}


def generate_pseudo_labels(request: PseudoLabelRequest) -> dict:
    """Write the stage-1 pseudo label map of every training case and ``report.json``; return the report. The
    output folder is held for the run (boxunet.io.locks): a second run on the dataset is refused."""
    folders, jobs = plan_jobs(request)
    mine = share_of(jobs, request.num_parts, request.part_id)
    part = f"part_{request.part_id}_of_{request.num_parts}" if request.num_parts > 1 else None
    output_folder = stage1_folder(folders.preprocessed)
    with exclusive_folder(output_folder, "pseudo-label run", part=part):
        report = _generate(request, folders, jobs, mine, output_folder)
        write_json(report, output_folder / (f"report.{part}.json" if part else "report.json"))
        if part is None:  # every case is in report.json now
            for path in output_folder.glob("report.part_*_of_*.json"):
                path.unlink()
        return report


def _generate(request: PseudoLabelRequest, folders: DatasetFolders, all_jobs: list[_CaseJob], jobs: list[_CaseJob],
              output_folder: Path) -> dict:
    """The masks of ``jobs`` (the templates or region miners are learned from ``all_jobs``); the report."""
    if request.overwrite:
        for job in jobs:
            for path in _outputs(job):
                if path.exists():
                    os.remove(path)
    start = time.perf_counter()
    miners = prepare_region_miners(all_jobs, request.progress) if request.method == "acol" else None
    templates = (prepare_shape_templates(all_jobs, request.num_processes, request.progress)
                 if request.method == "template" else None)
    records = map_in_processes(_run_case, jobs, request.num_processes, "pseudo labels", progress=request.progress,
                               worker_threads=max(1, default_num_processes() // max(1, request.num_processes)))
    box_labels = all_jobs[0].box_labels
    report = {"dataset": folders.name, "method": request.method, "parameters": all_jobs[0].parameters.to_json(),
              "tuning": request.tuning, "device": request.device, "output_folder": str(output_folder),
              "mining": request.mining.to_json() if request.method == "acol" else None,
              "region_miners": miners,
              "templates": ({"parameters": request.templates.to_json(), **templates} if templates else None),
              "total_seconds": round(time.perf_counter() - start, 2), "mean": _means(records, box_labels),
              "cases": records}
    if request.num_parts > 1:
        report["part"] = {"part_id": request.part_id, "num_parts": request.num_parts}
    return report
