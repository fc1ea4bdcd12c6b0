"""Learning-rate schedules: nnU-Net's polynomial decay, and [Yang 2020]'s exponential decay."""

PAPER_LEARNING_RATE = 1e-3
PAPER_FINAL_FRACTION = 0.01  # [Yang 2020] decays exponentially without giving the rate: 100-fold over the run is ours


def poly_learning_rate(initial: float, epoch: int, epochs: int, exponent: float = 0.9) -> float:
    """Polynomial decay: initial * (1 - epoch / epochs) ^ exponent."""
    return initial * (1 - min(epoch, epochs) / epochs) ** exponent


def paper_learning_rate(epoch: int, epochs: int) -> float:
    """[Yang 2020]'s exponential decay, spread over the run: 1e-3 * 0.01 ^ (epoch / epochs)."""
    return PAPER_LEARNING_RATE * PAPER_FINAL_FRACTION ** (min(epoch, epochs) / epochs)
