"""``boxunet_plan_and_preprocess``: verify, fingerprint, plan and preprocess a raw dataset."""
import argparse

from boxunet.cli.common import run_cli
from boxunet.parallel import check_part, default_num_processes
from boxunet.plan_and_preprocess import (DEFAULT_PREPROCESSED_CONFIGURATIONS, PlanAndPreprocessOptions,
                                         plan_and_preprocess)
from boxunet.planning.planner import DEFAULT_PLANS_NAME


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="boxunet_plan_and_preprocess",
        description="Verify a raw dataset, write dataset_fingerprint.json and boxunet_plans.json, and preprocess "
                    "every case for the chosen configurations.")
    parser.add_argument("-d", "--dataset", nargs="+", required=True,
                        help="dataset id(s) (1 -> Dataset001_*) or full folder name(s)")
    parser.add_argument("-c", "--configurations", nargs="+", default=list(DEFAULT_PREPROCESSED_CONFIGURATIONS),
                        help="configurations to preprocess (default: %(default)s; 3d_lowres only if planned)")
    parser.add_argument("-np", "--num-processes", type=int, default=min(2, default_num_processes()),
                        help="worker processes for fingerprint and preprocessing (default: %(default)s); lower it "
                             "if the machine runs out of memory")
    parser.add_argument("--gpu-memory-gb", type=float, default=8.0,
                        help="memory budget that sets patch and batch size (default: %(default)s); e.g. 1 for CPU runs")
    parser.add_argument("--ct-window", type=float, nargs=2, metavar=("LO", "HI"),
                        help="clip CT channels to this HU window and scale to [0, 1] instead of the fingerprint's "
                             "percentiles + z-score ([Yang 2020]: -200 500)")
    parser.add_argument("--target-spacing", type=float, nargs=3, metavar=("Z", "Y", "X"),
                        help="override the 3d_fullres target spacing (array axis order)")
    parser.add_argument("--cascade", action="store_true",
                        help="plan 3d_lowres and 3d_cascade_fullres even when 3d_fullres patches cover a quarter of "
                             "the median image (nnU-Net plans them only below that)")
    parser.add_argument("-p", "--plans-name", default=DEFAULT_PLANS_NAME, help="plans identifier (default: %(default)s)")
    parser.add_argument("--verify", action="store_true",
                        help="only verify the dataset (file names, geometry, labels, boxes, voxel values); write nothing")
    parser.add_argument("--clean", action="store_true", help="recompute the fingerprint even if one is stored")
    parser.add_argument("--no-preprocess", action="store_true", help="stop after writing the plans")
    parser.add_argument("--num-parts", type=int, default=1,
                        help="split the preprocessing of the cases into this many disjoint parts, e.g. one per "
                             "machine; needs the plans (a run with --no-preprocess first; default: 1)")
    parser.add_argument("--part-id", type=int, default=0,
                        help="the part this run preprocesses, 0 to --num-parts - 1 (default: 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or summaries")
    return parser


def main(argv: list[str] | None = None) -> None:
    arguments = build_parser().parse_args(argv)
    options = PlanAndPreprocessOptions(
        configurations=arguments.configurations, num_processes=max(1, arguments.num_processes),
        gpu_memory_gb=arguments.gpu_memory_gb,
        ct_window=tuple(arguments.ct_window) if arguments.ct_window else None,
        target_spacing=arguments.target_spacing, plans_name=arguments.plans_name, force_cascade=arguments.cascade,
        verify_only=arguments.verify,
        clean=arguments.clean, preprocess=not arguments.no_preprocess, progress=not arguments.quiet,
        num_parts=arguments.num_parts, part_id=arguments.part_id)
    run_cli(check_part, arguments.num_parts, arguments.part_id)  # before any work
    for dataset in arguments.dataset:
        report = run_cli(plan_and_preprocess, dataset, options,
                         interrupted_hint="finished cases are kept; rerun the same command to resume")
        if not arguments.quiet:
            print(f"{report['dataset']}: done in {report.get('total_seconds', report.get('fingerprint_seconds'))} s")


if __name__ == "__main__":
    main()
