"""The first stage end to end: verify -> fingerprint -> plans -> preprocessed cases."""
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from boxunet.errors import BoxunetError
from boxunet.fingerprint import extract_fingerprint, fingerprint_matches, fingerprint_path
from boxunet.io.atomic import read_json, write_json
from boxunet.io.cases import CaseFiles
from boxunet.io.dataset_json import DatasetDescription, load_dataset_json
from boxunet.io.dataset_locator import find_dataset_folder
from boxunet.io.locks import exclusive_folder
from boxunet.io.verification import verify_headers
from boxunet.parallel import share_of
from boxunet.paths import PLANS_FILE_NAME, checked_name, preprocessed_root, raw_root
from boxunet.planning.planner import (DEFAULT_CONFIGURATIONS, DEFAULT_PLANS_NAME, plan_experiment, plans_file,
                                      plans_summary)
from boxunet.planning.plans import Plans, load_plans, save_plans
from boxunet.preprocessing.dataset import copy_reference_segmentations, preprocess_dataset

DEFAULT_PREPROCESSED_CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres")


@dataclass
class PlanAndPreprocessOptions:
    """What ``boxunet_plan_and_preprocess`` was asked to do."""

    configurations: list[str] = field(default_factory=lambda: list(DEFAULT_PREPROCESSED_CONFIGURATIONS))
    num_processes: int = 2
    gpu_memory_gb: float = 8.0
    ct_window: tuple[float, float] | None = None
    target_spacing: list[float] | None = None
    plans_name: str = DEFAULT_PLANS_NAME
    force_cascade: bool = False
    verify_only: bool = False
    clean: bool = False
    preprocess: bool = True
    progress: bool = True
    num_parts: int = 1  # --num-parts: this run preprocesses every num_parts-th case (the plans must exist)
    part_id: int = 0

    def __post_init__(self):
        checked_name(self.plans_name, "plans name")  # it names files and folders: refused before anything runs


def _log(message: str, options: PlanAndPreprocessOptions) -> None:
    if options.progress:
        print(message, flush=True)


def _keep_custom_configurations(plans: Plans, path: Path) -> None:
    if not path.is_file():
        return
    previous = load_plans(path)
    for name, configuration in previous.configurations.items():
        if name not in plans.configurations:
            plans.configurations[name] = configuration


def plan_and_preprocess(dataset: str | int, options: PlanAndPreprocessOptions) -> dict:
    """Verify, fingerprint, plan and preprocess one raw dataset; return a report with timings."""
    started = time.perf_counter()
    raw_folder = find_dataset_folder(dataset, raw_root())
    description = load_dataset_json(raw_folder)
    cases = verify_headers(raw_folder, description)
    _log(f"{raw_folder.name}: {len(cases)} cases, headers verified", options)
    output_folder = preprocessed_root() / raw_folder.name
    _check_configuration_names(options.configurations, output_folder / PLANS_FILE_NAME)
    report = {"dataset": raw_folder.name, "cases": len(cases)}

    if options.num_parts > 1:
        return _preprocess_part(raw_folder, output_folder, description, cases, options, report, started)
    stored = fingerprint_path(output_folder)
    fingerprint = None
    if stored.is_file() and not options.clean and not options.verify_only:
        fingerprint = read_json(stored)
        if not fingerprint_matches(fingerprint, cases, description):
            fingerprint = None
    if fingerprint is None:
        fingerprint = extract_fingerprint(cases, description, options.num_processes, options.progress)
        for warning in fingerprint["warnings"]:
            print(f"warning: {warning}", file=sys.stderr, flush=True)
    report["fingerprint_seconds"] = round(time.perf_counter() - started, 2)
    if options.verify_only:
        _log(f"{raw_folder.name}: all {len(cases)} cases verified (images, labels, boxes, voxel values)", options)
        return report

    with exclusive_folder(output_folder, "plan and preprocess run"):
        return _plan_and_preprocess(raw_folder, output_folder, description, cases, fingerprint, options, report,
                                    started)


def _plan_and_preprocess(raw_folder: Path, output_folder: Path, description: DatasetDescription, cases: list[CaseFiles],
                         fingerprint: dict, options: PlanAndPreprocessOptions, report: dict, started: float) -> dict:
    """The writing part: fingerprint, dataset.json and plans, then the preprocessed cases (the folder is held)."""
    write_json(fingerprint, fingerprint_path(output_folder))
    write_json(description.to_json(), output_folder / "dataset.json")
    plans = plan_experiment(fingerprint, description, raw_folder.name, options.gpu_memory_gb, options.ct_window,
                            options.target_spacing, options.plans_name, options.force_cascade)
    plans_path = plans_file(output_folder, options.plans_name)
    _keep_custom_configurations(plans, plans_path)
    save_plans(plans, plans_path)
    _log(plans_summary(plans), options)
    report["plans_file"] = str(plans_path)
    report["planning_seconds"] = round(time.perf_counter() - started, 2)
    if not options.preprocess:
        return report

    missing = [c for c in options.configurations if c not in plans.configurations]
    requested = [c for c in options.configurations if c in plans.configurations]
    for name in missing:
        _log(f"configuration {name} is not needed for this dataset (not in the plans); skipped", options)
    voxels = {case_id: float(np.prod(shape)) for case_id, shape in
              zip(fingerprint["case_ids"], fingerprint["shapes_after_crop"])}
    report["preprocessing"] = preprocess_dataset(cases, plans, output_folder, requested, options.num_processes,
                                                 voxels, options.progress)
    report["reference_segmentations_copied"] = copy_reference_segmentations(cases, output_folder)
    report["total_seconds"] = round(time.perf_counter() - started, 2)
    return report


def _preprocess_part(raw_folder: Path, output_folder: Path, description: DatasetDescription, cases: list[CaseFiles],
                     options: PlanAndPreprocessOptions, report: dict, started: float) -> dict:
    """Preprocess one part of the cases (``--num-parts``) with the plans a whole run wrote before; the parts
    run side by side, e.g. on several machines sharing the preprocessed folder."""
    share = share_of(cases, options.num_parts, options.part_id)
    plans_path = plans_file(output_folder, options.plans_name)
    stored = fingerprint_path(output_folder)
    if options.clean or options.verify_only or not options.preprocess:
        raise BoxunetError("--num-parts splits the preprocessing only: run --clean, --verify and --no-preprocess "
                           "without it")
    if not plans_path.is_file() or not stored.is_file() or not fingerprint_matches(read_json(stored), cases,
                                                                                     description):
        raise BoxunetError(f"--num-parts needs the fingerprint and plans of the current files in {output_folder}: run "
                           f"boxunet_plan_and_preprocess -d {raw_folder.name} --no-preprocess once first")
    plans = load_plans(plans_path)
    part = f"part_{options.part_id}_of_{options.num_parts}"
    with exclusive_folder(output_folder, "plan and preprocess run", part=part):
        requested = [c for c in options.configurations if c in plans.configurations]
        report["preprocessing"] = preprocess_dataset(share, plans, output_folder, requested, options.num_processes,
                                                     None, options.progress)
        report["reference_segmentations_copied"] = copy_reference_segmentations(share, output_folder)
    _log(f"{raw_folder.name}: {part} ({len(share)} of {len(cases)} cases) preprocessed; a run without --num-parts "
         "afterwards finds every case done", options)
    report["total_seconds"] = round(time.perf_counter() - started, 2)
    return report


def _check_configuration_names(names: list[str], path: Path) -> None:
    known = set(DEFAULT_CONFIGURATIONS)
    if path.is_file():
        known |= set(load_plans(path).configurations)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BoxunetError(f"unknown configuration(s) {unknown}; choose from {sorted(known)}")
