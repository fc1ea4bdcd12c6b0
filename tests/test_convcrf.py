import numpy as np
import pytest
import torch

from boxunet.boxes.convcrf import CRFParameters, PairwiseKernels, mean_field


def brute_force_mean_field(unary, features, spacing, parameters, fixed):
    """Dense reference: the pairwise kernel as an N x N matrix restricted to the box window (float64)."""
    classes, shape = unary.shape[0], unary.shape[1:]
    radius = parameters.window_radius(spacing)
    coordinates = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    positions = coordinates * np.asarray(spacing)
    intensities = features.reshape(features.shape[0], -1).T / parameters.intensity_sigma
    steps = np.abs(coordinates[:, None] - coordinates[None])
    inside = np.all(steps <= np.asarray(radius), axis=-1) & ~np.eye(len(coordinates), dtype=bool)
    distance2 = ((positions[:, None] - positions[None]) ** 2).sum(-1)
    colour2 = ((intensities[:, None] - intensities[None]) ** 2).sum(-1)
    kernel = (parameters.appearance_weight * np.exp(-distance2 / (2 * parameters.appearance_sigma_mm ** 2) - colour2 / 2)
              + parameters.smoothness_weight * np.exp(-distance2 / (2 * parameters.smoothness_sigma_mm ** 2)))
    kernel *= inside
    if parameters.normalize:
        kernel /= np.maximum(kernel.sum(1, keepdims=True), 1e-6)
    kernel *= parameters.pairwise_weight
    logits = unary.reshape(classes, -1).T
    q0 = np.exp(logits - logits.max(1, keepdims=True))
    q0 /= q0.sum(1, keepdims=True)
    q, fixed = q0, fixed.reshape(-1)
    for _ in range(parameters.iterations):
        z = logits + kernel @ q
        q = np.exp(z - z.max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
        q[fixed] = q0[fixed]
    return q.T.reshape(unary.shape)


@pytest.mark.parametrize("kept", [True, False], ids=["kernels kept", "kernels computed on every pass"])
@pytest.mark.parametrize("normalize,classes", [(False, 3), (True, 3), (True, 2)])
def test_mean_field_matches_dense_reference(normalize, classes, kept):
    rng = np.random.default_rng(0)
    shape, spacing = (5, 6, 7), (2.5, 0.8, 1.0)
    unary = rng.normal(size=(classes,) + shape)
    features = rng.normal(size=(2,) + shape)
    fixed = rng.random(shape) < 0.2
    parameters = CRFParameters(appearance_weight=0.8, appearance_sigma_mm=1.5, intensity_sigma=0.7,
                               smoothness_weight=0.4, smoothness_sigma_mm=1.0, iterations=4,
                               normalize=normalize, pairwise_weight=1.5)
    assert parameters.window_radius(spacing) == (1, 3, 3)
    expected = brute_force_mean_field(unary, features, spacing, parameters, fixed)
    kernels = PairwiseKernels(torch.tensor(features[None]), None, spacing, parameters, 10 ** 6 if kept else 0)
    for _ in range(2):  # the second call reuses the kernels (and their sum) of the first
        result = mean_field(torch.tensor(unary[None]), torch.tensor(features[None]), spacing, parameters,
                            fixed=torch.tensor(fixed[None, None]), kernels=kernels)
        np.testing.assert_allclose(result[0].double().numpy(), expected, atol=1e-5)
    # 3 x 7 x 7 window: 73 offsets o > 0; their pairs take 4 bytes each
    assert len(kernels.offsets) == 73 and kernels.kept == kept
