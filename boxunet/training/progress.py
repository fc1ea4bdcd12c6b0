"""Training progress: per-epoch values, the log file and ``progress.png``."""
import math
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

EMA_MOMENTUM = 0.9


class TrainingProgress:
    """Per-epoch training values, kept in plain lists so they fit in a checkpoint."""

    KEYS = ("train_loss", "val_loss", "pseudo_dice", "ema_pseudo_dice", "learning_rate", "epoch_seconds")

    def __init__(self, values: dict | None = None):
        self.values = {key: list((values or {}).get(key, [])) for key in self.KEYS}

    def record(self, train_loss: float, val_loss: float, pseudo_dice: list[float], learning_rate: float,
               epoch_seconds: float) -> float:
        """Add one epoch; return the new EMA of the mean pseudo Dice (NaN entries, absent classes, are skipped;
        an epoch without any Dice keeps the previous EMA)."""
        present = [d for d in pseudo_dice if not math.isnan(d)]
        previous = self.values["ema_pseudo_dice"]
        if not present:
            ema = previous[-1] if previous else 0.0
        else:
            mean_dice = sum(present) / len(present)
            ema = mean_dice if not previous else EMA_MOMENTUM * previous[-1] + (1 - EMA_MOMENTUM) * mean_dice
        for key, value in zip(self.KEYS, (train_loss, val_loss, list(pseudo_dice), ema, learning_rate, epoch_seconds)):
            self.values[key].append(value)
        return ema

    def truncate(self, epochs: int) -> None:
        """Keep only the first ``epochs`` entries (after resuming from an older checkpoint)."""
        for key in self.KEYS:
            del self.values[key][epochs:]

    def epoch_line(self, epoch: int, epochs: int, class_names: list[str], later_epochs: int = 0,
                   data_wait: float = 0.0) -> str:
        """One log line for ``epoch`` of ``epochs``: its values, the share of its time the training steps waited
        for batches (``data_wait`` seconds), and the training time left: the median epoch so far times the epochs
        still to come, this network's and ``later_epochs`` of networks trained after it."""
        v = {key: values[epoch] for key, values in self.values.items()}
        dice = ", ".join(f"{name} {value:.4f}" for name, value in zip(class_names, v["pseudo_dice"]))
        left = statistics.median(self.values["epoch_seconds"]) * (epochs - epoch - 1 + later_epochs)
        return (f"epoch {epoch + 1}/{epochs}: train loss {v['train_loss']:.4f}, val loss {v['val_loss']:.4f}, "
                f"pseudo Dice [{dice}] (EMA {v['ema_pseudo_dice']:.4f}), lr {v['learning_rate']:.6f}, "
                f"{v['epoch_seconds']:.1f} s (data wait {data_wait / max(v['epoch_seconds'], 1e-9):.0%}); "
                f"{duration(left)} of training left")

    def plot(self, path: Path, class_names: list[str]) -> None:
        """Write progress.png: losses and pseudo Dice, learning rate, epoch time."""
        epochs = range(len(self.values["train_loss"]))
        figure, axes = plt.subplots(3, 1, figsize=(10, 12))
        axes[0].plot(epochs, self.values["train_loss"], label="train loss", color="b")
        axes[0].plot(epochs, self.values["val_loss"], label="val loss", color="r")
        axes[0].set_ylabel("loss")
        dice_axis = axes[0].twinx()
        for index, name in enumerate(class_names):
            dice_axis.plot(epochs, [d[index] for d in self.values["pseudo_dice"]], linestyle=":", label=f"pseudo Dice {name}")
        dice_axis.plot(epochs, self.values["ema_pseudo_dice"], color="g", label="pseudo Dice (EMA)")
        dice_axis.set_ylabel("pseudo Dice")
        axes[0].legend(loc="upper left")
        dice_axis.legend(loc="upper right")
        axes[1].plot(epochs, self.values["learning_rate"], color="b")
        axes[1].set_ylabel("learning rate")
        axes[2].plot(epochs, self.values["epoch_seconds"], color="b")
        axes[2].set_ylabel("epoch time (s)")
        axes[2].set_xlabel("epoch")
        figure.tight_layout()
        temporary = Path(path).with_name(f".tmp_{Path(path).name}")
        figure.savefig(temporary)
        plt.close(figure)
        temporary.replace(path)


class WaitTimer:
    """An iterator's items, with the seconds spent waiting for them summed in ``seconds``."""

    def __init__(self, iterator):
        self.iterator, self.seconds = iterator, 0.0

    def __next__(self):
        started = time.perf_counter()
        try:
            return next(self.iterator)
        finally:
            self.seconds += time.perf_counter() - started


def duration(seconds: float) -> str:
    """``seconds`` as a person reads it: "45 s", "12 min", "3.4 h"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


class LogFile:
    """Append timestamped lines to ``training_log.txt`` (and echo them when ``echo``), each after ``prefix``
    (which network of a multi-network run is speaking)."""

    def __init__(self, path: Path, echo: bool = True, prefix: str = ""):
        self.path = Path(path)
        self.echo = echo
        self.prefix = prefix

    def __call__(self, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {self.prefix}{message}"
        with self.path.open("a") as handle:
            handle.write(line + "\n")
        if self.echo:
            print(line, flush=True)
