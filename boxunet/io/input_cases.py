"""The cases of a folder of images to predict, checked before any prediction starts."""
from pathlib import Path

from boxunet.errors import BoxunetError, DatasetError
from boxunet.io.cases import CaseFiles, group_channel_files, safe_cases
from boxunet.io.dataset_json import DatasetDescription
from boxunet.io.verification import case_header_problems


def check_output_folder(input_folder: Path, output_folder: Path) -> None:
    """The output folder must be neither the input folder nor inside it (outputs would be read as inputs)."""
    input_folder, output_folder = Path(input_folder).resolve(), Path(output_folder).resolve()
    if output_folder == input_folder or input_folder in output_folder.parents:
        raise BoxunetError(f"output folder {output_folder} is inside the input folder {input_folder}; "
                           "choose an output folder outside it")


def list_prediction_cases(input_folder: Path, description: DatasetDescription) -> list[CaseFiles]:
    """Every case of ``input_folder``: ``<case>_<XXXX><ending>`` per channel (one-channel datasets also
    accept ``<case><ending>``). Wrong channel counts, unreadable files, unsafe case ids and channels whose
    geometry differs are all reported together as a DatasetError."""
    input_folder = Path(input_folder)
    if not input_folder.is_dir():
        raise BoxunetError(f"input folder {input_folder} does not exist")
    ending = description.file_ending
    channels_by_case, problems = group_channel_files(input_folder, ending, description.num_channels,
                                                     allow_unsuffixed_single_channel=True)
    cases = []
    for case_id, channels in safe_cases(channels_by_case, problems):
        if len(channels) < description.num_channels or max(channels) >= description.num_channels:
            continue  # reported by group_channel_files
        case = CaseFiles(case_id, tuple(channels[c] for c in range(description.num_channels)))
        problems += case_header_problems(case, description)[0]
        cases.append(case)
    if not channels_by_case and not problems:
        raise BoxunetError(f"input folder {input_folder} holds no image ending in {ending} (the dataset's file ending)")
    if problems:
        raise DatasetError(problems, header=f"input folder {input_folder} cannot be predicted")
    return cases

