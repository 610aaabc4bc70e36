"""state_dict / checkpoints / devices, and clear errors on bad input."""
import numpy as np
import pytest

import scratchnet as sn
from scratchnet.runtime.backend import DeviceError, check_device, gpu_available


def small_resnet(seed=0):
    return sn.ResNet(1, 5, widths=(4, 8), depths=(1, 1), stem_kernel=3, stem_stride=1,
                     dropout=0.2, seed=seed)


def test_state_dict_keys_follow_pytorch_names():
    keys = list(small_resnet().state_dict())
    for key in ["stem.conv.weight", "stem.bn.weight", "stem.bn.running_mean",
                "layer1.0.conv1.weight", "layer1.0.bn1.running_var",
                "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_mean",
                "fc.weight", "fc.bias"]:
        assert key in keys
    assert "stem.conv.bias" not in keys  # convs before BatchNorm carry no bias


def test_state_dict_round_trip_through_checkpoint(tmp_path, rng):
    a, b = small_resnet(seed=0), small_resnet(seed=1)
    a.train()
    a.forward(rng.standard_normal((4, 1, 9, 9)).astype(np.float32))  # move running stats
    path = tmp_path / "ckpt.npz"
    sn.save_checkpoint(path, a.state_dict(), {"note": "hi"})
    state, meta = sn.load_checkpoint(path)
    assert meta == {"note": "hi"}
    b.load_state_dict(state)
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_array_equal(va, vb, err_msg=k)
    a.eval(), b.eval()
    x = rng.standard_normal((2, 1, 9, 9)).astype(np.float32)
    np.testing.assert_array_equal(a.forward(x), b.forward(x))


def test_load_state_dict_missing_key_is_named():
    state = dict(small_resnet().state_dict())
    del state["layer1.0.bn1.running_mean"]
    with pytest.raises(KeyError, match="layer1.0.bn1.running_mean"):
        small_resnet().load_state_dict(state)


def test_load_state_dict_misshaped_key_is_named_and_nothing_changes():
    model = small_resnet()
    before = model.state_dict()["fc.bias"].copy()
    state = {k: v.copy() for k, v in model.state_dict().items()}
    state["fc.bias"] = np.zeros(3, dtype=np.float32)
    state["fc.weight"] = state["fc.weight"] + 1
    with pytest.raises(ValueError, match="fc.bias"):
        model.load_state_dict(state)
    np.testing.assert_array_equal(model.state_dict()["fc.bias"], before)


def test_unexpected_key_is_rejected():
    state = dict(small_resnet().state_dict(), extra=np.zeros(1))
    with pytest.raises(KeyError, match="extra"):
        small_resnet().load_state_dict(state)


def test_corrupt_checkpoint_file(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz"):
        sn.load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        sn.load_checkpoint(tmp_path / "missing.npz")


def test_same_seed_same_initialisation():
    for (k, a), (_, b) in zip(small_resnet(3).state_dict().items(),
                              small_resnet(3).state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_train_eval_modes_reach_every_layer():
    model = small_resnet().eval()
    assert all(not m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("layer,shape,match", [
    (lambda: sn.Conv2d(3, 4, 3), (2, 3, 5), "4-D"),
    (lambda: sn.Conv2d(3, 4, 3), (2, 2, 5, 5), "3 channels"),
    (lambda: sn.Conv2d(1, 1, 5), (1, 1, 3, 3), "smaller than the kernel"),
    (lambda: sn.BatchNorm2d(4), (2, 3, 5, 5), "4 channels"),
    (lambda: sn.Linear(5, 2), (3, 4), "5 channels"),
    (lambda: sn.MaxPool2d(3), (1, 1, 2, 2), "smaller than the window"),
    (lambda: small_resnet(), (2, 3, 9, 9), "1 channels"),
    (lambda: sn.TimeMaxMeanPool(), (2, 3, 5), "4-D"),
])
def test_bad_input_shapes_raise_clear_errors(layer, shape, match):
    with pytest.raises(ValueError, match=match):
        layer().forward(np.zeros(shape, dtype=np.float32))


def test_non_finite_loss_raises():
    z = np.array([[np.nan, 0.0], [1.0, 2.0]], dtype=np.float32)
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        sn.SoftmaxCrossEntropy().forward(z, np.array([0, 1]))


def test_bad_labels_raise():
    loss = sn.SoftmaxCrossEntropy()
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        loss.forward(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="shape"):
        loss.forward(np.zeros((2, 3)), np.zeros((2, 4)))


def test_gpu_request_without_gpu_is_a_clear_error():
    if gpu_available():
        pytest.skip("a GPU is present")
    with pytest.raises(DeviceError, match="gpu"):
        check_device("gpu")
    with pytest.raises(DeviceError):
        small_resnet().to("gpu")


def test_resnet_pool_choice_is_checked_and_kept_in_its_config():
    with pytest.raises(ValueError, match="unknown pool 'max'; choose one of"):
        sn.ResNet(1, 5, widths=(4,), depths=(1,), pool="max")
    assert "pool" not in small_resnet().config  # as in every checkpoint before the option
    model = sn.ResNet(1, 5, widths=(4,), depths=(1,), pool="time_max_mean")
    assert model.config["pool"] == "time_max_mean"
    assert isinstance(sn.ResNet(**model.config).pool, sn.TimeMaxMeanPool)


def test_unknown_device():
    with pytest.raises(ValueError, match="tpu"):
        check_device("tpu")


@pytest.mark.parametrize("layer", [
    lambda r: sn.BasicBlock(3, 3, 1, r), lambda r: sn.BasicBlock(3, 4, 2, r),
    lambda r: sn.MaxPool2d(3, 2, 1), lambda r: sn.ReLU(), lambda r: sn.BatchNorm2d(3),
    lambda r: sn.Conv2d(3, 4, 3, 1, 1, rng=r), lambda r: sn.TimeMaxMeanPool()])
def test_layers_leave_their_inputs_and_upstream_gradients_untouched(rng, layer):
    """Layers may work in place only on arrays they created themselves."""
    layer = layer(rng).astype(np.float64)
    x = rng.standard_normal((2, 3, 6, 5))
    x_before = x.copy()
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    dy_before = dy.copy()
    layer.backward(dy)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(dy, dy_before)


@pytest.mark.parametrize("training", [True, False])
def test_relu_in_place_writes_its_output_over_its_input(rng, training):
    """ReLU(inplace=True) returns its input's own memory holding max(x, 0), and its backward
    is the plain ReLU's."""
    x = rng.standard_normal((3, 4, 5, 6))
    plain, inplace = sn.ReLU(), sn.ReLU(inplace=True)
    plain.train(training)
    inplace.train(training)
    expected = plain.forward(x)
    dy = rng.standard_normal(x.shape)
    expected_dx = plain.backward(dy)
    y = inplace.forward(x)
    assert np.shares_memory(y, x)
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(inplace.backward(dy), expected_dx)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("stride, width", [(1, 3), (2, 4)])
def test_basic_block_with_relus_in_place_computes_the_same(rng, training, stride, width):
    """BasicBlock's ReLUs rectify arrays made inside the block, in place: the block's output
    and gradients are bit for bit those of the same block with plain ReLUs."""
    import copy
    block = sn.BasicBlock(3, width, stride, rng).astype(np.float64)
    assert block.relu1.inplace and block.relu2.inplace
    plain = copy.deepcopy(block)
    plain.relu1.inplace = plain.relu2.inplace = False
    x = rng.standard_normal((2, 3, 6, 5))
    outputs = []
    for b in (block, plain):
        b.train(training)
        y = b.forward(x)
        dx = b.backward(np.cos(y))
        outputs.append((y, dx, [p.grad.copy() for p in b.parameters()]))
    (y1, dx1, g1), (y2, dx2, g2) = outputs
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(dx1, dx2)
    for a, b in zip(g1, g2):
        np.testing.assert_array_equal(a, b)


def test_a_model_that_has_trained_can_be_deep_copied(rng):
    # The weight average and the BatchNorm fold both start from copy.deepcopy(model); the
    # dropout generator made by a training forward must not stop that.
    import copy
    model = small_resnet()
    model.train()
    x = rng.standard_normal((4, 1, 9, 9)).astype(np.float32)
    model.forward(x)
    twin = copy.deepcopy(model)
    a, b = model.forward(x), twin.forward(x)  # same dropout generator state, same masks
    np.testing.assert_array_equal(a, b)


def layers_keeping_state(model):
    """The dotted names of the layers whose last forward kept something for backward."""
    names = []

    def walk(layer, prefix):
        if layer._cache is not None:
            names.append(prefix)
        for name, child in layer.named_children():
            walk(child, f"{prefix}.{name}" if prefix else name)

    walk(model, "")
    return names


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_a_pass_lets_go_of_what_the_last_pass_kept_before_it_runs(rng, mode):
    """Sequential.forward releases every layer's saved state before its first layer runs, so
    that two passes' activations never coexist (eval mode keeps each layer's input or output
    until the next pass); the new pass keeps its own, and its backward runs as before."""
    model = small_resnet()
    model.train(mode == "train")
    x = rng.standard_normal((4, 1, 9, 9)).astype(np.float32)
    model.forward(x)
    kept = layers_keeping_state(model)
    assert "fc" in kept and "layer2.0.conv2" in kept and len(kept) > 10
    seen = []
    stem_forward = model.stem.conv.forward

    def first_layer(x):  # what the rest of the network holds when the next pass begins
        seen.extend(layers_keeping_state(model))
        return stem_forward(x)

    model.stem.conv.forward = first_layer
    y = model.forward(x)
    assert seen == []
    assert layers_keeping_state(model) == kept
    model.backward(np.ones_like(y))
    model.forward(x)
    model.release_saved()
    assert layers_keeping_state(model) == []
    with pytest.raises(RuntimeError, match="Linear.backward: no forward pass"):
        model.backward(np.ones_like(y))
