"""The attention layers: finite-difference checks in float64 (input and every parameter, and
the whole transformer along a random direction), PyTorch parity when torch is installed, and
the same numbers on the CuPy stand-in."""
import numpy as np
import pytest

import scratchnet as sn
from scratchnet.gradcheck import check_layer, network_directional_error

TOL = 1e-6


def f64(layer):
    return layer.astype(np.float64)


def assert_all_small(errors):
    bad = {k: v for k, v in errors.items() if not v < TOL}
    assert not bad, f"relative errors above {TOL}: {bad}"


def test_layernorm_gradients(rng):
    layer = f64(sn.LayerNorm(6))
    layer.weight.data[...] = rng.standard_normal(6)
    layer.bias.data[...] = rng.standard_normal(6)
    assert_all_small(check_layer(layer, rng.standard_normal((2, 3, 6)) * 3 + 1))


def test_layernorm_standardises_each_token(rng):
    y = sn.LayerNorm(8).forward(rng.standard_normal((4, 5, 8)) * 7 - 3)
    np.testing.assert_allclose(y.mean(axis=-1), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=-1), 1, rtol=1e-5)  # var / (var + eps)


def test_gelu_gradient_and_its_exact_form(rng):
    x = rng.standard_normal((3, 4, 5)) * 3
    assert_all_small(check_layer(sn.GELU(), x))
    from scipy.stats import norm
    np.testing.assert_allclose(sn.GELU().forward(x), x * norm.cdf(x), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_attention_gradients(rng, heads):
    layer = f64(sn.MultiHeadSelfAttention(8, heads, rng=rng))
    layer.in_proj_bias.data[...] = rng.standard_normal(24) * 0.1
    layer.out_proj.bias.data[...] = rng.standard_normal(8) * 0.1
    assert_all_small(check_layer(layer, rng.standard_normal((2, 5, 8))))


def test_attention_rows_are_distributions_and_dropout_is_differentiated(rng):
    layer = f64(sn.MultiHeadSelfAttention(8, 2, dropout=0.3, rng=rng, seed=3))
    x = rng.standard_normal((2, 5, 8))
    layer.eval().forward(x)
    np.testing.assert_allclose(layer.attention().sum(axis=-1), 1, rtol=1e-12)
    layer.train()
    # the same mask on every forward: reseed before each, as the check's reset does
    assert_all_small(check_layer(layer, x, reset=lambda: layer.attn_drop.reseed(7)))


def test_encoder_layer_gradients(rng):
    layer = f64(sn.TransformerEncoderLayer(8, 2, dim_feedforward=12, dropout=0.0, rng=rng))
    for p in (layer.norm1, layer.norm2):
        p.weight.data[...] = 1 + 0.3 * rng.standard_normal(8)
        p.bias.data[...] = 0.3 * rng.standard_normal(8)
    assert_all_small(check_layer(layer, rng.standard_normal((2, 4, 8))))


def test_token_layers_gradients(rng):
    assert_all_small(check_layer(sn.PatchTokens(), rng.standard_normal((2, 5, 3, 4))))
    assert_all_small(check_layer(f64(sn.ClassTokenEmbedding(6, 5, rng=rng)),
                                 rng.standard_normal((2, 6, 5))))
    assert_all_small(check_layer(sn.ClassTokenPool(), rng.standard_normal((2, 4, 3))))


def tiny_ast(seed=0, dropout=0.0):
    return sn.AudioSpectrogramTransformer(1, 5, input_size=(12, 20), dim=8, depth=2, heads=2,
                                          mlp_ratio=2, patch=4, patch_stride=3,
                                          dropout=dropout, seed=seed)


def test_the_whole_transformer_along_a_random_direction(rng):
    model = f64(tiny_ast())
    assert model.patch_grid == (3, 6)
    x = rng.standard_normal((3, 1, 12, 20))
    t = np.array([0, 3, 4])
    assert network_directional_error(model, sn.SoftmaxCrossEntropy(0.1), x, t) < TOL


def test_attention_maps_cover_the_patch_grid(rng):
    model = tiny_ast().eval()
    model.forward(rng.standard_normal((2, 1, 12, 20)).astype(np.float32))
    maps = model.attention_maps()
    assert len(maps) == 2 and maps[0].shape == (2, 3, 6)
    assert np.all(maps[0] >= 0) and np.all(maps[0].sum(axis=(1, 2)) < 1)  # the rest: itself


def test_the_transformer_runs_on_the_device(standin, rng):
    """Every layer on CuPy arrays (the strict stand-in), GELU's erf included: the same
    numbers as on NumPy, forward and backward."""
    x = rng.standard_normal((2, 1, 12, 20)).astype(np.float32)
    host, device = tiny_ast(), tiny_ast().to("gpu")
    y_host = host.forward(x)
    y_device = device.forward(standin.asarray(x))
    np.testing.assert_allclose(standin.asnumpy(y_device), y_host, rtol=1e-5, atol=1e-6)
    dy = rng.standard_normal(y_host.shape).astype(np.float32)
    dx_host = host.backward(dy)
    dx_device = device.backward(standin.asarray(dy))
    np.testing.assert_allclose(standin.asnumpy(dx_device), dx_host, rtol=1e-4, atol=1e-6)
    for (name, a), (_, b) in zip(host.named_parameters(), device.named_parameters()):
        np.testing.assert_allclose(standin.asnumpy(b.grad), a.grad, rtol=1e-4, atol=1e-5,
                                   err_msg=name)


# -- PyTorch parity ----------------------------------------------------------------------------

def test_encoder_layer_matches_pytorch(rng):
    """Load torch's state_dict in one line; compare output, input gradient and every
    parameter gradient in float64."""
    torch = pytest.importorskip("torch")
    d, heads, ff = 12, 3, 20
    ours = f64(sn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, rng=rng))
    theirs = torch.nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, activation="gelu",
                                              batch_first=True, norm_first=True).double()
    state = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}
    ours.load_state_dict(state)
    assert set(ours.state_dict()) == set(state)
    x = rng.standard_normal((2, 7, d))
    dy = rng.standard_normal((2, 7, d))
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    yt.backward(torch.tensor(dy))
    y = ours.forward(x)
    ours.zero_grad()
    dx = ours.backward(dy)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    theirs_grads = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, theirs_grads[name].grad.numpy(), rtol=1e-9,
                                   atol=1e-12, err_msg=name)
    # and back: our parameters into torch give torch our outputs
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})


def test_layernorm_and_gelu_match_pytorch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((3, 4, 6))
    ln = torch.nn.LayerNorm(6).double()
    with torch.no_grad():
        ln.weight.copy_(torch.tensor(rng.standard_normal(6)))
        ln.bias.copy_(torch.tensor(rng.standard_normal(6)))
    ours = f64(sn.LayerNorm(6)).load_state_dict({k: v.detach().numpy()
                                                  for k, v in ln.state_dict().items()})
    np.testing.assert_allclose(ours.forward(x), ln(torch.tensor(x)).detach().numpy(),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sn.GELU().forward(x),
                               torch.nn.functional.gelu(torch.tensor(x)).numpy(),
                               rtol=1e-12, atol=1e-14)
