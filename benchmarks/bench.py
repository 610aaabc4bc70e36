"""Throughput and memory of training and inference, against PyTorch on the same machine.

    python -m benchmarks.bench                       # reference net + presets, CPU
    python -m benchmarks.bench --models reference --profile
    python -m benchmarks.bench --device gpu
    python -m benchmarks.bench --models reference --rounds 3   # alternate, take medians

For each network: training clips/s (forward + loss + backward + AdamW step), inference clips/s
(eval-mode forward; "BN folded": the same with every BatchNorm folded into the convolution
before it, scratchnet.fusion on our side and torch.fx's fusion on PyTorch's), achieved
GFLOP/s and its fraction of the float32 GEMM rate measured in this run, and peak resident
memory.  Each measurement runs in its own child process, so peak memory is that of the
measurement alone (interpreter and libraries included).  PyTorch and librosa are measured
in the same run when installed (pip install .[bench]); neither is needed.  ``--rounds K``
alternates the implementations K times and reports each figure's median, and the median of
the K back-to-back ratios, so that a drift of the machine's speed during the run moves both
sides of a ratio alike.
The reference network is the one PyTorch was timed on when this target was set:
a [2, 2, 2, 2] x [32, 64, 128, 256] ResNet on 1 x 64 x 250 log-Mels, batch 32.
"""
import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import time

import numpy as np

from dsp import LogMel
from scratchnet.kernels.im2col import conv_output_size as conv_out
from scratchnet.runtime.backend import cpu_identity

from experiments.esc50 import CLIP_SECONDS
from experiments.models import PRESETS

REFERENCE = dict(input=(1, 64, 250), model=dict(widths=[32, 64, 128, 256], depths=[2, 2, 2, 2],
                                                stem_kernel=7, stem_stride=2, stem_pool=True,
                                                dropout=0.0))


def networks():
    """name -> (input shape (C, H, W), model config)."""
    nets = {"reference": (REFERENCE["input"], REFERENCE["model"])}
    for name, preset in PRESETS.items():
        if preset["model"].get("kind", "resnet") != "resnet":
            continue  # the transformer's harness is benchmarks.bench_attention
        f = preset["features"]
        frames = LogMel(**f).num_frames(int(round(CLIP_SECONDS * f["sr"])))
        nets[f"preset:{name}"] = ((1, f["n_mels"], frames), preset["model"])
    from .shape_set import SHAPES  # here: shape_set imports this module
    for name, (shape, _, cfg) in SHAPES.items():
        nets[f"shape:{name}"] = (shape, cfg)
    return nets


def add_network_arguments(parser, default_models, steps):
    """The options of a benchmark run per named network (benchmarks.bench_fold,
    benchmarks.profile_layers): --models among networks(), --batch, --steps, --device."""
    parser.add_argument("--models", nargs="+", default=default_models, choices=list(networks()))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")


def stage_strides(cfg):
    """Each stage's first stride: the config's, else 1 then 2 (scratchnet.ResNet's default)."""
    return cfg.get("strides") or [1] + [2] * (len(cfg["widths"]) - 1)


def forward_flops(shape, cfg, num_classes=50):
    """Multiply-adds x 2 of every convolution and the linear head, for one clip."""
    c, h, w = shape
    flops = 0

    def conv(cin, cout, k, s, p):
        nonlocal h, w, flops
        h, w = conv_out(h, k, s, p), conv_out(w, k, s, p)
        flops += 2 * cin * cout * k * k * h * w

    k = cfg["stem_kernel"]
    conv(c, cfg["widths"][0], k, cfg["stem_stride"], k // 2)
    if cfg["stem_pool"]:
        h, w = conv_out(h, 3, 2, 1), conv_out(w, 3, 2, 1)
    cin = cfg["widths"][0]
    strides = stage_strides(cfg)
    for i, (width, depth) in enumerate(zip(cfg["widths"], cfg["depths"])):
        for b in range(depth):
            stride = strides[i] if b == 0 else 1
            h0, w0 = h, w
            conv(cin, width, 3, stride, 1)
            conv(width, width, 3, 1, 1)
            if stride != 1 or cin != width:
                flops += 2 * cin * width * conv_out(h0, 1, stride, 0) * conv_out(w0, 1, stride, 0)
            cin = width
    return flops + 2 * cin * num_classes


def gemm_rate(xp, n=2048, repeat=5):
    """Best float32 GEMM rate (GFLOP/s) for an n x n x n product."""
    a = xp.ones((n, n), dtype=xp.float32)
    b = xp.ones((n, n), dtype=xp.float32)
    out = a @ b
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        xp.matmul(a, b, out=out)
        sync(xp)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def blas_kernels():
    """Which kernels NumPy's BLAS runs, as threadpoolctl reports them ('SkylakeX', 'Haswell':
    OpenBLAS's name for its AVX-512 and AVX2 code), or None where that cannot be told.

    OpenBLAS picks its kernels when it loads, unless OPENBLAS_CORETYPE names them; on some
    machines that variable (and OPENBLAS_L2_SIZE) is set for older OpenBLAS builds, and then a
    current NumPy multiplies at its AVX2 rate on an AVX-512 CPU, about half its speed (README,
    Speed).  The benchmark prints both, so that a figure always says which code it measured."""
    try:
        import threadpoolctl
    except ImportError:
        return None
    for lib in threadpoolctl.threadpool_info():
        if lib.get("user_api") == "blas":
            return lib.get("architecture") or lib.get("internal_api")
    return None


def processor():
    """The CPU a figure was measured on, as 'AMD EPYC (family 25, model 17)'
    (scratchnet.runtime.backend.cpu_identity).  A virtual machine may name two generations
    alike ('AMD EPYC' for a Zen 4 and a Zen 5), whose ratios to PyTorch differ (docs/speed.md,
    "The ceiling"): the family and model tell them apart."""
    name, family, model = cpu_identity()
    if family is None or model is None:
        return name
    return f"{name} (family {family}, model {model})"


def blas_settings():
    """The OPENBLAS_* variables that choose kernels or their blocking, as set (or 'unset')."""
    return {name: os.environ.get(name, "unset")
            for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}


def sync(xp):
    if xp is not np:
        xp.cuda.Stream.null.synchronize()


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_steps(step, steps, warmup, sync_fn):
    for _ in range(warmup):
        step()
    sync_fn()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync_fn()
    return (time.perf_counter() - t) / steps


def scratchnet_step(shape, cfg, batch, device="cpu"):
    """(model, x, train_step): the network (seed 0) on a fixed random batch, and one training
    step of it (forward, label-smoothed loss, backward, AdamW) as a function."""
    import scratchnet as sn
    from scratchnet.runtime.backend import check_device
    from experiments.models import build_model
    xp = check_device(device)
    model = build_model(cfg, 50, seed=0, input_grad=False).to(device)
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.standard_normal((batch,) + tuple(shape)).astype(np.float32))
    y = xp.asarray(rng.integers(0, 50, size=batch))
    loss = sn.SoftmaxCrossEntropy(0.1)
    opt = sn.AdamW(list(model.parameters()), lr=1e-3)

    def train_step():
        opt.zero_grad()
        loss.forward(model.forward(x), y)
        model.backward(loss.backward())
        opt.step()
    return model, x, train_step


def measure_scratchnet(shape, cfg, batch, steps, warmup, device, profile=False):
    from scratchnet.runtime.backend import check_device
    from scratchnet.fusion import fold_batchnorm
    xp = check_device(device)
    model, x, train_step = scratchnet_step(shape, cfg, batch, device)

    def infer_step():
        model.forward(x)

    model.train()
    if profile:
        return profile_steps(train_step, steps)
    train = time_steps(train_step, steps, warmup, lambda: sync(xp))
    model.eval()
    infer = time_steps(infer_step, steps, warmup, lambda: sync(xp))
    folded = fold_batchnorm(model)  # BatchNorm folded into the convolutions (inference only)
    infer_folded = time_steps(lambda: folded.forward(x), steps, warmup, lambda: sync(xp))
    return dict(train_s=train, infer_s=infer, infer_folded_s=infer_folded)


def measure_torch(shape, cfg, batch, steps, warmup, device):
    import torch
    from torch import nn
    torch.manual_seed(0)
    dev = "cuda" if device == "gpu" else "cpu"

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                       nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x):
            f = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return torch.relu(f + self.down(x))

    k = cfg["stem_kernel"]
    layers = [nn.Conv2d(shape[0], cfg["widths"][0], k, cfg["stem_stride"], k // 2, bias=False),
              nn.BatchNorm2d(cfg["widths"][0]), nn.ReLU()]
    if cfg["stem_pool"]:
        layers.append(nn.MaxPool2d(3, 2, 1))
    cin = cfg["widths"][0]
    strides = stage_strides(cfg)
    for i, (width, depth) in enumerate(zip(cfg["widths"], cfg["depths"])):
        for b in range(depth):
            layers.append(Block(cin, width, strides[i] if b == 0 else 1))
            cin = width
    class TimeMaxMean(nn.Module):  # scratchnet.TimeMaxMeanPool
        def forward(self, x):
            m = x.mean(dim=2)
            return m.amax(dim=2) + m.mean(dim=2)

    pool = cfg.get("pool", "avg")
    layers += ([nn.AdaptiveAvgPool2d(1), nn.Flatten()] if pool == "avg" else [TimeMaxMean()])
    layers.append(nn.Linear(cin, 50))
    model = nn.Sequential(*layers).to(dev)
    x = torch.randn((batch,) + shape, device=dev)
    y = torch.randint(0, 50, (batch,), device=dev)
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sync_fn = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

    def train_step():
        opt.zero_grad()
        crit(model(x), y).backward()
        opt.step()

    def infer_step():
        with torch.inference_mode():
            model(x)

    model.train()
    train = time_steps(train_step, steps, warmup, sync_fn)
    model.eval()
    infer = time_steps(infer_step, steps, warmup, sync_fn)
    # The same fold on PyTorch's side (torch.fx's conv-BatchNorm fusion, eval mode only).
    from torch.fx.experimental.optimization import fuse
    fused = fuse(model)

    def fused_step():
        with torch.inference_mode():
            fused(x)

    infer_folded = time_steps(fused_step, steps, warmup, sync_fn)
    return dict(train_s=train, infer_s=infer, infer_folded_s=infer_folded, torch=torch.__version__,
                threads=torch.get_num_threads())


def profile_steps(step, steps):
    """Where a training step spends its time: cProfile's own-time per function, grouped."""
    import cProfile
    import pstats
    step()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        step()
    prof.disable()
    stats = pstats.Stats(prof)
    total = sum(v[2] for v in stats.stats.values())
    rows = sorted(((v[2], f"{k[0].split('/')[-1]}:{k[2]}") for k, v in stats.stats.items()),
                  reverse=True)
    return dict(total_s=total / steps,
                top=[(name, t / steps, t / total) for t, name in rows[:25]])


def _child(conn, fn, kwargs, keep_memory):
    try:
        if keep_memory:
            from scratchnet.runtime.memory import keep_freed_memory
            keep_freed_memory()
        result = fn(**kwargs)
        result["peak_rss_mb"] = peak_rss_mb()
        conn.send(result)
    except Exception as e:  # report, don't hang the parent
        conn.send({"error": f"{type(e).__name__}: {e}"})


def in_child(fn, keep_memory=True, **kwargs):
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(child, fn, kwargs, keep_memory))
    proc.start()
    result = parent.recv()
    proc.join()
    return result


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--models", nargs="+", default=None,
                   help="subset of: " + ", ".join(networks()))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1,
                   help="measure each implementation this many times, alternating (ours, "
                        "PyTorch's, ours, ...), and report the medians and the median of the "
                        "rounds' ratios: this machine's speed drifts between measurements")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    p.add_argument("--profile", action="store_true",
                   help="print where a scratchnet training step spends its time")
    p.add_argument("--malloc", choices=["keep", "default"], default="keep",
                   help="keep: glibc keeps freed memory for reuse (scratchnet.runtime.memory), in every "
                        "measured process alike; default: glibc's defaults")
    p.add_argument("--logmel", action="store_true", help="also run benchmarks.bench_logmel")
    p.add_argument("--json", help="write all figures to this file")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds must be at least 1, got {args.rounds}")
    from scratchnet.runtime.backend import check_device
    xp = check_device(args.device)
    nets = networks()
    names = args.models or list(nets)
    for name in names:
        if name not in nets:
            p.error(f"unknown model {name!r}; choose from {list(nets)}")
    rate = gemm_rate(xp)
    keep = args.malloc == "keep"
    from scratchnet.runtime.parallel import thread_count
    threads = thread_count()
    blas_timeout = os.environ.get("OPENBLAS_THREAD_TIMEOUT", "default")
    kernels, settings = blas_kernels(), blas_settings()
    print(f"float32 GEMM (2048^3) on {args.device}: {rate:.0f} GFLOP/s; batch {args.batch}; "
          f"malloc: {args.malloc}; scratchnet threads: {threads} "
          f"(OPENBLAS_THREAD_TIMEOUT {blas_timeout})")
    print(f"{processor()}; BLAS kernels: {kernels or 'unknown (pip install threadpoolctl)'}; "
          + ", ".join(f"{k} {v}" for k, v in settings.items()))
    try:
        import torch  # noqa: F401
        have_torch = not args.no_torch
    except ImportError:
        have_torch = False
        print("PyTorch not installed: no reference (pip install .[bench])")
    report = {"gemm_gflops": rate, "batch": args.batch, "device": args.device,
              "malloc": args.malloc, "threads": threads, "openblas_thread_timeout": blas_timeout,
              "blas_kernels": kernels, "processor": processor(),
              **{k.lower(): v for k, v in settings.items()}, "models": {}}
    header = (f"{'model':<14} {'input':<12} {'impl':<11} {'train clips/s':>13} "
              f"{'GFLOP/s':>8} {'of GEMM':>7} {'infer clips/s':>13} {'BN folded':>9} "
              f"{'peak MB':>8}")
    print(header)
    for name in names:
        shape, cfg = nets[name]
        flops = forward_flops(shape, cfg)
        if args.profile:
            prof = in_child(measure_scratchnet, keep_memory=keep, shape=shape, cfg=cfg,
                            batch=args.batch, steps=args.steps, warmup=0, device=args.device,
                            profile=True)
            print(f"\nprofile of one scratchnet training step, {name}: "
                  f"{prof['total_s']:.3f} s")
            for fn, t, frac in prof["top"]:
                print(f"  {frac * 100:5.1f}%  {t * 1e3:8.1f} ms  {fn}")
            continue
        entry = {"input": list(shape), "forward_gflop_per_clip": flops / 1e9}
        impls = [("scratchnet", measure_scratchnet)]
        if have_torch:
            impls.append(("pytorch", measure_torch))
        rounds = {impl: [] for impl, _ in impls}
        for _ in range(args.rounds):
            for impl, fn in impls:
                r = in_child(fn, keep_memory=keep, shape=shape, cfg=cfg, batch=args.batch,
                             steps=args.steps, warmup=args.warmup, device=args.device)
                if "error" in r:
                    print(f"{name:<14} {impl}: {r['error']}")
                    continue
                train_cps, infer_cps = args.batch / r["train_s"], args.batch / r["infer_s"]
                r.update(train_clips_s=train_cps, infer_clips_s=infer_cps,
                         infer_folded_clips_s=args.batch / r["infer_folded_s"],
                         train_gflops=3 * flops * train_cps / 1e9)   # backward ~ 2x forward
                rounds[impl].append(r)
        for impl, runs in rounds.items():
            if not runs:
                continue
            # One round: its figures; several: the median of each figure over the rounds.
            r = {key: (float(np.median([run[key] for run in runs]))
                       if isinstance(value, (int, float)) else value)
                 for key, value in runs[0].items()}
            r["fraction_of_gemm"] = r["train_gflops"] / rate
            if len(runs) > 1:
                r["rounds"] = runs
            entry[impl] = r
            print(f"{name:<14} {'x'.join(map(str, shape)):<12} {impl:<11} "
                  f"{r['train_clips_s']:13.1f} {r['train_gflops']:8.1f} "
                  f"{r['fraction_of_gemm']:7.2f} {r['infer_clips_s']:13.1f} "
                  f"{r['infer_folded_clips_s']:9.1f} {r['peak_rss_mb']:8.0f}")
        if "scratchnet" in entry and "pytorch" in entry:
            # The ratio of each round's pair, measured back to back; the median of them.
            pairs = list(zip(rounds["scratchnet"], rounds["pytorch"]))
            per_round = {key: [s[figure] / t[figure] for s, t in pairs]
                         for key, figure in (("train", "train_clips_s"),
                                             ("infer", "infer_clips_s"),
                                             ("infer_folded", "infer_folded_clips_s"),
                                             ("memory", "peak_rss_mb"))}
            ratio = {key: float(np.median(v)) for key, v in per_round.items()}
            entry["ratio"] = ratio
            print(f"{'':<14} {'':<12} {'ratio':<11} {ratio['train']:13.2f} "
                  f"{'':>8} {'':>7} {ratio['infer']:13.2f} {ratio['infer_folded']:9.2f} "
                  f"{ratio['memory']:8.2f}")
            if len(pairs) > 1:
                entry["ratio_rounds"] = per_round
                spans = {key: f"{min(v):.2f}-{max(v):.2f}" for key, v in per_round.items()}
                print(f"{'':<14} {'':<12} {'(range)':<11} {spans['train']:>13} "
                      f"{'':>8} {'':>7} {spans['infer']:>13} {spans['infer_folded']:>9} "
                      f"{spans['memory']:>8}")
        report["models"][name] = entry
    if args.logmel:
        from benchmarks import bench_logmel
        print()
        bench_logmel.main(["--device", args.device])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
