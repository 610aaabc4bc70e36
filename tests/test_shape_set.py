"""The speed benchmark's shape set covers what it must, and its networks are the ones both
sides build."""
import numpy as np

from benchmarks import bench, shape_set


def test_the_shape_set_spans_stems_strides_widths_inputs_and_batches():
    shapes = shape_set.SHAPES.values()
    assert len(shape_set.SHAPES) >= 6
    stems = {(cfg["stem_kernel"], cfg["stem_stride"]) for _, _, cfg in shapes}
    assert {3, 5, 7} <= {k for k, _ in stems} and (7, 2) in stems
    strides = {s for _, _, cfg in shapes for s in cfg["strides"][1:]}
    assert strides == {1, 2}  # stride-1 and stride-2 blocks past the first stage
    widths = [w for _, _, cfg in shapes for w in cfg["widths"]]
    assert min(widths) == 16 and max(widths) == 512
    inputs = [shape[1:] for shape, _, _ in shapes]
    assert (40, 100) in inputs and (128, 431) in inputs
    batches = [batch for _, batch, _ in shapes]
    assert min(batches) == 8 and max(batches) == 64
    from experiments.models import PRESETS
    assert not any(cfg == preset["model"] for _, _, cfg in shapes for preset in PRESETS.values())


def test_the_flop_count_follows_the_strides():
    """forward_flops walks the same strides the network has: its last map size is the
    network's."""
    import scratchnet as sn
    shape, _, cfg = shape_set.SHAPES["s7-w32-128x251-b32-stride1"]
    model = sn.ResNet(1, 50, **cfg)
    _, stages = model.eval().forward_features(np.zeros((1,) + shape, np.float32))
    assert bench.stage_strides(cfg) == [1, 2, 1, 2]
    assert stages["layer3"].shape[2:] == stages["layer2"].shape[2:]  # the stride-1 stage
    assert bench.forward_flops(shape, cfg) < bench.forward_flops(
        shape, dict(cfg, strides=[1, 1, 1, 2]))


def test_the_algorithm_benchmark_finds_every_convolution_and_times_each_algorithm():
    """benchmarks.conv_algorithms lists a network's convolutions with its own batch (the
    one-channel stem first) and runs a training pass of any algorithm on a geometry."""
    from benchmarks import conv_algorithms
    found = list(conv_algorithms.geometries(["s3-w16-40x100-b64"]))
    stem = found[0]
    assert (stem.in_channels, stem.height, stem.width, stem.batch) == (1, 40, 100, 64)
    assert len(found) == len(set(found)) >= 5
    small = stem._replace(in_channels=3, height=6, width=7, out_channels=4, batch=2)
    for algorithm in ("im2col", "shifted"):
        conv_algorithms.training_pass(algorithm, small, np.random.default_rng(0))()
