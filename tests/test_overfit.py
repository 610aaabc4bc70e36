"""A small ResNet in float32 must be able to memorise 32 random samples."""
import numpy as np

import scratchnet as sn


def test_small_resnet_overfits_32_random_samples():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 1, 16, 16)).astype(np.float32)
    t = rng.integers(0, 10, size=32)
    model = sn.ResNet(1, 10, widths=(8, 16), depths=(1, 1), stem_kernel=3, stem_stride=1,
                      stem_pool=False, seed=0)
    loss = sn.SoftmaxCrossEntropy()
    opt = sn.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    history = []
    for _ in range(150):
        opt.zero_grad()
        history.append(float(loss.forward(model.forward(x), t)))
        model.backward(loss.backward())
        opt.step()
        assert model.fc.weight.data.dtype == np.float32
    assert history[0] > 2.0
    assert history[-1] < 0.05, f"loss after 150 steps: {history[-1]:.4f}"
