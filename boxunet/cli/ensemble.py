"""``boxunet_ensemble -i DIR1 DIR2 ... -o OUT``: average the saved probabilities of several prediction folders."""
import argparse
from pathlib import Path

from boxunet.cli.common import run_cli
from boxunet.inference.ensemble import ensemble_folders
from boxunet.parallel import default_num_processes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="boxunet_ensemble",
        description="Average the <case>.npz probabilities of several prediction folders (boxunet_predict "
                    "--save-probabilities, or validation with boxunet_train --npz) and write the label maps.")
    parser.add_argument("-i", "--input", nargs="+", required=True, type=Path, help="two or more prediction folders")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output folder (created)")
    parser.add_argument("--save-probabilities", action="store_true",
                        help="also write the averaged <case>.npz and <case>.json (to ensemble again)")
    parser.add_argument("-np", "--num-processes", type=int, default=min(2, default_num_processes()),
                        help="worker processes; each holds the probabilities of one case (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if len(arguments.input) < 2:
        parser.error("give at least two input folders")
    cases = run_cli(ensemble_folders, arguments.input, arguments.output,
                    save_probabilities=arguments.save_probabilities, num_processes=max(1, arguments.num_processes))
    print(f"{len(cases)} case(s) ensembled into {arguments.output}")


if __name__ == "__main__":
    main()
