"""One training step of the real Trainer on a fixed global batch, in whatever process group torchrun gives
(none: a single process takes the whole batch). Run by test_distributed.py; writes rank 0's parameters after
the step to the file named by the first argument."""
import sys
from dataclasses import replace

import torch
import torch.nn.functional as F

from boxunet.preprocessing.previous_stage import network_input_channels
from boxunet.training.distributed import ProcessGroupInfo, init_from_environment, shutdown
from boxunet.training.options import TrainingOptions
from boxunet.training.run import TrainingRequest, prepare
from boxunet.training.trainer import Trainer

GLOBAL_BATCH = 4


def fixed_batch(trainer: Trainer) -> dict:
    """The same random global batch on every rank: images, a label map and its deep-supervision targets."""
    generator = torch.Generator().manual_seed(7)
    channels = network_input_channels(trainer.plans, trainer.configuration)
    data = torch.randn(GLOBAL_BATCH, channels, *trainer.configuration.patch_size, generator=generator)
    labels = torch.randint(0, trainer.num_outputs, (GLOBAL_BATCH, 1, *trainer.configuration.patch_size),
                           generator=generator).float()
    labels[GLOBAL_BATCH // 2:] = 0  # the second half holds no foreground: each rank's own batch Dice would differ
    with torch.no_grad():
        outputs = trainer.network(data[:1])
    targets = [F.interpolate(labels, size=output.shape[2:], mode="nearest") for output in outputs]
    return {"data": data, "target": targets}


def main(output_file: str) -> None:
    group = init_from_environment("cpu") or ProcessGroupInfo()
    # fp32: the comparison is of the arithmetic of the update, which bf16 rounding would blur
    options = TrainingOptions(epochs=1, iterations_per_epoch=1, augmentation_workers=0, progress_bar=False,
                              precision="fp32")
    setup = prepare(TrainingRequest("1", "3d_fullres", "0", Trainer, device="cpu", options=options))
    # batch Dice couples the samples of a batch: the case where ranks must sum tp/fp/fn over the global batch
    setup = replace(setup, configuration=replace(setup.configuration, batch_dice=True))
    trainer = Trainer(setup, options, group)
    trainer.initialize()
    batch = fixed_batch(trainer)
    initial = {name: p.detach().clone() for name, p in trainer.network.named_parameters()}
    share = GLOBAL_BATCH // group.world_size
    mine = slice(group.rank * share, (group.rank + 1) * share)
    loss = trainer.train_step({"data": batch["data"][mine], "target": [t[mine] for t in batch["target"]]})
    if group.is_main:
        torch.save({"loss": loss, "initial": initial,
                    "parameters": {name: p.detach().clone() for name, p in trainer.network.named_parameters()}},
                   output_file)
    shutdown(group)


if __name__ == "__main__":
    main(sys.argv[1])
