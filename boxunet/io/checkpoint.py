"""Checkpoints: tensors and plain metadata, written atomically, loaded with ``weights_only=True``."""
from pathlib import Path

import torch

from boxunet.errors import BoxunetError
from boxunet.io.atomic import atomic_path

REQUIRED_KEYS = ("network_weights", "optimizer_state", "current_epoch", "trainer_name", "options", "configuration")


def save_checkpoint(state: dict, path: Path) -> None:
    """Write ``state`` to ``path`` atomically (an interrupted write leaves the previous checkpoint)."""
    with atomic_path(path) as temporary:
        torch.save(state, temporary)


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """Load a checkpoint safely; a missing, corrupt or foreign file raises a one-line BoxunetError."""
    path = Path(path)
    if not path.is_file():
        raise BoxunetError(f"checkpoint {path} does not exist; train first (boxunet_train) or check the fold")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for corrupt files
        raise BoxunetError(f"checkpoint {path} cannot be loaded ({type(error).__name__}); it is corrupt or not "
                           "a boxunet checkpoint: delete it and rerun (--c resumes from checkpoint_latest.pth)") from None
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise BoxunetError(f"checkpoint {path} is not a boxunet checkpoint (missing {missing})")
    return state
