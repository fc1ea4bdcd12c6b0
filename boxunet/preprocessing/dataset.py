"""Preprocess every case of a dataset for the requested configurations, in parallel and resumably."""
import shutil
from dataclasses import dataclass
from pathlib import Path

from boxunet.io.atomic import atomic_path
from boxunet.io.boxes import read_boxes
from boxunet.io.cases import CaseFiles
from boxunet.io.images import read_channels, read_image
from boxunet.io.stamps import file_stamp
from boxunet.parallel import map_in_processes
from boxunet.planning.plans import ConfigurationPlan, Plans
from boxunet.preprocessing.case import preprocess_case, preprocessing_signature
from boxunet.preprocessing.storage import finished_case_properties, save_case


@dataclass
class _CaseJob:
    case: CaseFiles
    plans: Plans
    configurations: list[ConfigurationPlan]
    folders: list[Path]


def _preprocess_and_store(job: _CaseJob) -> str:
    # the raw arrays are referenced only by the generator, so they are freed as soon as it is done with them
    stamps = job.case.input_stamps()  # what the stored case is made from, taken before the files are read
    boxes = read_boxes(job.case.boxes) if job.case.boxes else []
    folder_of = {c.name: f for c, f in zip(job.configurations, job.folders)}
    for configuration, new_data, new_seg, properties in preprocess_case(
            *read_channels(list(job.case.images)), job.plans, job.configurations,
            read_image(job.case.label)[0][None] if job.case.label else None, boxes, job.case.case_id):
        save_case(folder_of[configuration.name], job.case.case_id, new_data, new_seg,
                  dict(properties, input_stamps=stamps), configuration.patch_size)
        del new_data, new_seg
    return job.case.case_id


def _stored(properties: dict | None, signature: str, stamps: dict) -> bool:
    return properties is not None and properties.get("preprocessing_signature") == signature \
        and properties.get("input_stamps") == stamps


def preprocess_dataset(cases: list[CaseFiles], plans: Plans, preprocessed_folder: Path, configuration_names: list[str],
                       num_processes: int, voxels_per_case: dict[str, float] | None = None,
                       progress: bool = True) -> dict:
    """Preprocess ``cases`` for ``configuration_names`` into ``preprocessed_folder/<data_identifier>/``.

    Cases stored with the plans' signature from the same, unchanged files (boxunet.io.stamps) are skipped
    (resume); a case whose files changed is preprocessed again. Configurations sharing a data identifier are
    stored once. Returns counts of processed and skipped cases per configuration.
    """
    configurations = {}
    for name in configuration_names:
        configuration = plans.configuration(name)
        configurations.setdefault(configuration.data_identifier, configuration)
    jobs, skipped = [], {identifier: 0 for identifier in configurations}
    for case in cases:
        stamps = case.input_stamps()
        todo = [c for identifier, c in configurations.items()
                if not _stored(finished_case_properties(Path(preprocessed_folder) / identifier, case.case_id),
                               preprocessing_signature(plans, c), stamps)]
        for identifier, configuration in configurations.items():
            if configuration not in todo:
                skipped[identifier] += 1
        if todo:
            jobs.append(_CaseJob(case, plans, todo, [Path(preprocessed_folder) / c.data_identifier for c in todo]))
    for identifier in configurations:
        (Path(preprocessed_folder) / identifier).mkdir(parents=True, exist_ok=True)
    if voxels_per_case:
        jobs.sort(key=lambda job: -voxels_per_case.get(job.case.case_id, 0.0))
    map_in_processes(_preprocess_and_store, jobs, num_processes, "preprocess", progress)
    return {identifier: {"processed": sum(1 for job in jobs if any(c.data_identifier == identifier
                                                                   for c in job.configurations)),
                         "skipped": skipped[identifier]} for identifier in configurations}


def copy_reference_segmentations(cases: list[CaseFiles], preprocessed_folder: Path) -> int:
    """Copy the raw label maps to ``gt_segmentations/`` (for evaluation, with the source's modification time);
    a copy of the same size and time as its source is skipped."""
    target_folder = Path(preprocessed_folder) / "gt_segmentations"
    target_folder.mkdir(parents=True, exist_ok=True)
    copied = 0
    for case in cases:
        if case.label is None:
            continue
        target = target_folder / case.label.name
        if target.is_file() and file_stamp(target) == file_stamp(case.label):
            continue
        with atomic_path(target) as temporary:
            shutil.copy2(case.label, temporary)
        copied += 1
    return copied

