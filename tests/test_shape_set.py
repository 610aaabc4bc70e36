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


def test_the_convolution_benchmark_runs_our_kernels_and_counts_the_flops():
    """benchmarks.conv_vs_torch counts a convolution's forward FLOPs as 2 x its multiply-adds,
    and its passes of ours run the kernels: the eval forward gives the reference's output and
    the training pass the reference's gradients, whichever algorithm the policy takes."""
    from benchmarks import conv_algorithms, conv_vs_torch
    from scratchnet.kernels import conv_policy, im2col
    g = conv_policy.ConvGeometry(3, 6, 7, (3, 3), 2, 1, False, 4, 2)
    assert conv_vs_torch.conv_flops(g) == 2 * 2 * 3 * 4 * 4 * 3 * 9   # Ho = 3, Wo = 4
    for algorithm, stride in (("im2col", 2), ("shifted", 1)):
        geometry = g._replace(stride=stride)
        data = conv_algorithms.operands(geometry, np.random.default_rng(0))
        x, w, _, dy = data
        with conv_policy.using(conv_policy.prefer(algorithm)):
            forward, training = conv_vs_torch.ours(geometry, data)
            y = forward()
            dx, dw, db = training()
        np.testing.assert_allclose(y, im2col.conv2d_reference(x, w, None, stride, 1),
                                   rtol=1e-4, atol=1e-4)
        ref_dx, ref_dw, _ = im2col.conv2d_reference_backward(dy, x, w, stride, 1)
        np.testing.assert_allclose(dx, ref_dx, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(dw, ref_dw, rtol=1e-4, atol=1e-4)
        assert db is None
    times = conv_vs_torch.median_times({"ours": (forward, training)}, rounds=2, repeats=2,
                                           settle=0.0)
    assert set(times["ours"]) == {"forward", "training"}
    assert all(t > 0 for t in times["ours"].values())


def test_the_benchmarks_name_the_processor_with_its_family_and_model(monkeypatch):
    """Two generations can share a model name in a virtual machine; the family and model of
    the first processor in /proc/cpuinfo tell them apart, and a text without them gives the
    name alone."""
    from scratchnet.runtime.backend import cpu_identity
    cpuinfo = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
               "model name\t: AMD EPYC\nflags\t\t: fpu avx512f\n\n"
               "processor\t: 1\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: Other\n")
    assert cpu_identity(cpuinfo) == ("AMD EPYC", "25", "17")
    assert cpu_identity("model name\t: Some CPU\n") == ("Some CPU", None, None)
    assert cpu_identity("")[0].strip()  # some name, never an empty line
    monkeypatch.setattr(bench, "cpu_identity", lambda: cpu_identity(cpuinfo))
    assert bench.processor() == "AMD EPYC (family 25, model 17)"
    monkeypatch.setattr(bench, "cpu_identity", lambda: ("Some CPU", None, None))
    assert bench.processor() == "Some CPU"
