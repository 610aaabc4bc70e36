"""Folding BatchNorm into convolutions: the folded network computes the eval-mode function."""
import numpy as np
import pytest

import scratchnet as sn
from scratchnet.fusion import FoldedBatchNorm, fold_batchnorm, fold_conv_batchnorm


def trained_statistics(model, rng, shape, steps=3):
    """Run a few training-mode forwards so running statistics and affine parameters are not
    their initial values (which would make the fold trivial), then switch to eval."""
    for layer in model.modules():
        if isinstance(layer, sn.BatchNorm2d):
            layer.weight.data[...] = rng.uniform(0.5, 2.0, layer.num_features)
            layer.bias.data[...] = rng.standard_normal(layer.num_features)
    model.train()
    for _ in range(steps):
        model.forward(rng.standard_normal(shape) * 3 + 1)
    return model.eval()


@pytest.mark.parametrize("bias", [False, True])
def test_folded_conv_equals_conv_then_batchnorm(rng, bias):
    conv = sn.Conv2d(3, 5, 3, stride=2, padding=1, bias=bias, rng=rng)
    bn = sn.BatchNorm2d(5)
    pair = trained_statistics(sn.Sequential(conv, bn).astype(np.float64), rng, (4, 3, 9, 8))
    x = rng.standard_normal((2, 3, 9, 8))
    folded = fold_conv_batchnorm(conv, bn)
    np.testing.assert_allclose(folded.forward(x), pair.forward(x), rtol=1e-12, atol=1e-12)
    assert folded.weight is not conv.weight and folded.bias is not None
    assert conv.bias is None or folded.bias is not conv.bias


def test_folded_resnet_matches_eval_mode_and_leaves_the_original_alone(rng):
    model = sn.ResNet(1, 7, widths=(4, 8), depths=(2, 1), stem_kernel=3, stem_stride=2,
                      dropout=0.3, seed=0).astype(np.float64)
    trained_statistics(model, rng, (6, 1, 16, 20))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    x = rng.standard_normal((3, 1, 16, 20))
    logits, stages = model.forward_features(x)
    folded_logits, folded_stages = folded.forward_features(x)
    np.testing.assert_allclose(folded_logits, logits, rtol=1e-10, atol=1e-12)
    for name in stages:
        np.testing.assert_allclose(folded_stages[name], stages[name], rtol=1e-10, atol=1e-12)
    # Every BatchNorm was folded (stem, both convs of every block, the downsample shortcut).
    n_bn = sum(isinstance(m, sn.BatchNorm2d) for m in model.modules())
    assert n_bn == 1 + 2 * 3 + 1
    assert not any(isinstance(m, sn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, FoldedBatchNorm) for m in folded.modules()) == n_bn
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    assert any(isinstance(m, sn.BatchNorm2d) for m in model.modules())


def test_folded_network_input_gradient_equals_eval_mode_gradient(rng):
    model = sn.ResNet(1, 5, widths=(4,), depths=(1,), stem_kernel=3, stem_stride=1,
                      stem_pool=False, seed=0).astype(np.float64)
    trained_statistics(model, rng, (4, 1, 8, 8))
    folded = fold_batchnorm(model)
    x = rng.standard_normal((2, 1, 8, 8))
    dy = rng.standard_normal((2, 5))
    model.forward(x)
    dx = model.backward(dy)
    folded.forward(x)
    np.testing.assert_allclose(folded.backward(dy), dx, rtol=1e-10, atol=1e-12)


def test_folded_network_refuses_training(rng):
    folded = fold_batchnorm(sn.ResNet(1, 5, widths=(4,), depths=(1,), seed=0))
    folded.train()
    with pytest.raises(RuntimeError, match="folded"):
        folded.forward(rng.standard_normal((2, 1, 8, 8)).astype(np.float32))


def test_fold_rejects_mismatched_layers(rng):
    conv = sn.Conv2d(3, 5, 3, rng=rng)
    with pytest.raises(ValueError, match="BatchNorm2d\\(4\\)"):
        fold_conv_batchnorm(conv, sn.BatchNorm2d(4))
    with pytest.raises(TypeError, match="Conv2d and a BatchNorm2d"):
        fold_conv_batchnorm(sn.BatchNorm2d(5), conv)


def test_fold_copies_no_activation_caches(rng):
    model = sn.ResNet(1, 5, widths=(4,), depths=(1,), seed=0)
    model.eval()
    model.forward(rng.standard_normal((2, 1, 8, 8)).astype(np.float32))
    assert model.stem.conv._cache is not None  # eval mode keeps a reference to its input
    folded = fold_batchnorm(model)
    assert all(getattr(m, "_cache", None) is None for m in folded.modules())
    assert model.stem.conv._cache is not None  # the original keeps its own
