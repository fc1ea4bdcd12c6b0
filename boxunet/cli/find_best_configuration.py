"""``boxunet_find_best_configuration DATASET``: the best configuration or pair of configurations from
cross-validation, its postprocessing, and the commands to predict new images with it."""
import argparse

from boxunet.cli.common import run_cli
from boxunet.ensembling.find_best import (DEFAULT_CONFIGURATIONS, INSTRUCTIONS_FILE, SelectionRequest,
                                          find_best_configuration)
from boxunet.io.dataset_locator import find_dataset_folder
from boxunet.parallel import default_num_processes
from boxunet.paths import results_root
from boxunet.planning.planner import DEFAULT_PLANS_NAME
from boxunet.trainers import default_trainer_of


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="boxunet_find_best_configuration", description=__doc__)
    parser.add_argument("dataset", help="dataset id (1 -> Dataset001_*) or folder name")
    parser.add_argument("-c", "--configurations", nargs="+", default=None,
                        help=f"configurations to compare (default: those of {' '.join(DEFAULT_CONFIGURATIONS)} "
                             "that were trained; named ones must exist)")
    parser.add_argument("-tr", "--trainers", nargs="+",
                        help="default: the trainer boxunet_train uses for this dataset (BoxThreeStage for box datasets)")
    parser.add_argument("-p", "--plans", default=DEFAULT_PLANS_NAME, help="default: %(default)s")
    parser.add_argument("-f", "--folds", nargs="+", default=["0", "1", "2", "3", "4"], help="default: %(default)s")
    parser.add_argument("--disable-ensembling", action="store_true", help="compare single models only")
    parser.add_argument("-np", "--num-processes", type=int, default=default_num_processes(),
                        help="processes for evaluation and ensembling (default: %(default)s)")
    return parser


def _default_trainers(dataset: str, plans_name: str, configurations: list[str]) -> list[str]:
    """The trainers boxunet_train uses without -tr for these configurations of ``dataset``."""
    results = run_cli(find_dataset_folder, dataset, results_root())
    return sorted({default_trainer_of(results, plans_name, configuration) for configuration in configurations})


def main(argv: list[str] | None = None) -> None:
    arguments = build_parser().parse_args(argv)
    configurations = list(arguments.configurations or DEFAULT_CONFIGURATIONS)
    trainers = arguments.trainers or _default_trainers(arguments.dataset, arguments.plans, configurations)
    request = SelectionRequest(arguments.dataset, configurations, arguments.configurations is not None, trainers,
                               arguments.plans,
                               [str(f) for f in arguments.folds], not arguments.disable_ensembling,
                               arguments.num_processes)
    information = run_cli(find_best_configuration, request)
    best = information["best"]
    print(f"\nbest: {best['name']} (foreground mean Dice {best['foreground_mean_dice']:.4f})")
    print("predict new images with:\n  " + "\n  ".join(information["commands"]))
    print(f"(also in {INSTRUCTIONS_FILE} next to the dataset's results)")


if __name__ == "__main__":
    main()
