"""The box trainers (documentation/box_supervision.md): trainers for datasets whose ``box_labels`` are given as
boxes, their samplers, losses and options, and stage 2 of [Yang 2020]'s method as a resumable job."""
