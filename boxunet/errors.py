"""User-facing errors. The command-line entry points print these without a traceback."""
from dataclasses import dataclass


class BoxunetError(Exception):
    """An error caused by the user's input or set-up, with a message that says what to do."""


@dataclass(frozen=True)
class Problem:
    """One problem found in one case: which case, which file, what is wrong."""

    case: str
    file: str
    message: str

    def __str__(self) -> str:
        return f"case {self.case!r}, file {self.file}: {self.message}"


class DatasetError(BoxunetError):
    """The dataset failed verification; ``problems`` lists every problem found."""

    def __init__(self, problems: list[Problem], header: str = "dataset verification failed"):
        self.problems = list(problems)
        lines = [f"{header} ({len(self.problems)} problem(s)); nothing was written:"]
        lines += [f"  - {problem}" for problem in self.problems]
        super().__init__("\n".join(lines))
