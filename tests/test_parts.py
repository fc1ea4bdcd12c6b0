"""``--num-parts N --part-id I`` for the per-case steps: preprocessing and stage-1 pseudo labels split into
disjoint shares, and a final run without the flags that finds every case done."""
import json

import pytest

from boxunet.cli.plan_and_preprocess import main as plan_main
from boxunet.cli.pseudo_labels import main as pseudo_labels_main
from boxunet.errors import BoxunetError
from boxunet.io.locks import exclusive_folder
from boxunet.parallel import share_of

CONFIGURATION = ["-c", "3d_fullres", "--gpu-memory-gb", "0.25", "-np", "1", "--quiet"]


def test_share_of_splits_items_into_disjoint_parts():
    items = list(range(7))
    parts = [share_of(items, 3, part) for part in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert share_of(items, 1, 0) == items
    with pytest.raises(BoxunetError, match="the part id must be one of 0-2"):
        share_of(items, 3, 3)
    with pytest.raises(BoxunetError, match="--num-parts 0: give 1 or more"):
        share_of(items, 0, 0)


def test_preprocessing_and_pseudo_labels_in_parts(tiny_dataset, roots):
    with pytest.raises(SystemExit, match="--no-preprocess once first"):  # the parts need the plans first
        plan_main(["-d", "1", *CONFIGURATION, "--num-parts", "2", "--part-id", "0"])
    plan_main(["-d", "1", *CONFIGURATION, "--no-preprocess"])
    cases = roots["preprocessed"] / "Dataset001_Tiny" / "boxunetPlans_3d_fullres"
    plan_main(["-d", "1", *CONFIGURATION, "--num-parts", "2", "--part-id", "1"])
    assert sorted(p.stem for p in cases.glob("*.json")) == ["case_001", "case_003"]
    plan_main(["-d", "1", *CONFIGURATION, "--num-parts", "2", "--part-id", "0"])
    assert sorted(p.stem for p in cases.glob("*.json")) == ["case_000", "case_001", "case_002", "case_003"]
    gt = roots["preprocessed"] / "Dataset001_Tiny" / "gt_segmentations"
    assert len(list(gt.glob("*.nii.gz"))) == 4

    stage1 = roots["preprocessed"] / "Dataset001_Tiny" / "pseudo_labels" / "stage1"
    pseudo_labels_main(["-d", "1", "--quiet", "--num-parts", "3", "--part-id", "2"])
    assert sorted(p.name for p in stage1.glob("*.nii.gz")) == ["case_002.nii.gz"]
    part = json.loads((stage1 / "report.part_2_of_3.json").read_text())
    assert [case["case_id"] for case in part["cases"]] == ["case_002"]
    with exclusive_folder(stage1, "pseudo-label run", part="part_0_of_3"):  # a part runs: the whole run waits
        with pytest.raises(SystemExit, match="a pseudo-label run split into parts is writing here"):
            pseudo_labels_main(["-d", "1", "--quiet"])
    pseudo_labels_main(["-d", "1", "--quiet"])
    report = json.loads((stage1 / "report.json").read_text())
    assert len(report["cases"]) == 4 and not list(stage1.glob("report.part_*"))
    with pytest.raises(SystemExit, match="the part id must be one of 0-1"):
        pseudo_labels_main(["-d", "1", "--quiet", "--num-parts", "2", "--part-id", "2"])
