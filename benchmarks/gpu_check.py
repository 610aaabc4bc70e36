"""The one prepared check of the GPU path, for a machine with CuPy and a CUDA device.

    python -m benchmarks.gpu_check --out gpu_check        # well inside 8 minutes on an H100

It runs, each part going on whatever the parts before it gave:
  (a) the GPU test files on real CuPy (tests/test_gpu_parity.py, tests/test_gpu_path.py,
      tests/test_conv_algorithms.py): every layer and every convolution algorithm against
      NumPy in float64, a float32 training step, checkpoints, LogMel, augmentation;
  (b) the public commands: ``train_esc50 --device gpu`` on a few generated clips per fold
      (WAV files written with the standard library, so no libsndfile is needed) stopped with
      --stop-after 1 and continued with --resume, then ``evaluate`` and ``classify --device gpu``;
  (c) training and inference throughput of the ``seed`` and ``cpu128`` networks against
      PyTorch + cuDNN on the same GPU and batch, in alternating rounds (no PyTorch: no row);
  (d) the data-parallel sums through NCCL on device buffers (scratchnet.distributed): three
      SGD steps with synchronised BatchNorm under ``mpiexec -n 1`` on the GPU against one
      NumPy process (tests/mpi/steps.py); not run without mpi4py and mpiexec.
It writes OUT/gpu_check.json and OUT/gpu_check.md (the table README's GPU section shows) and
exits non-zero if (a), (b) or a (d) that ran failed.  Audio decoding is needed by (b) alone.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import wave

import numpy as np

TEST_FILES = ["tests/test_gpu_parity.py", "tests/test_gpu_path.py",
              "tests/test_conv_algorithms.py"]
NETWORKS = ("preset:seed", "preset:cpu128")


def run_tests(timeout):
    """(a): pytest on the GPU test files; returns the part's record.  Without a GPU every
    test on real CuPy would skip, and pytest would pass: that is reported as not run."""
    from scratchnet.runtime.backend import gpu_available
    if not gpu_available():
        return dict(ok=False, seconds=0.0, tail="", summary="not run: CuPy or a CUDA device "
                    "is missing, and every GPU test would only skip")
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TEST_FILES]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        ok, tail = out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    except subprocess.TimeoutExpired as e:
        ok, tail = False, f"timed out after {timeout} s\n{(e.stdout or '')[-3000:]}"
    summary = tail.strip().splitlines()[-1] if tail.strip() else ""
    if "No module named pytest" in tail:
        summary = "pytest is missing: pip install -e \".[test]\""
    return dict(ok=ok, seconds=time.perf_counter() - t0, summary=summary, tail=tail)


def run_nccl(work, timeout=180):
    """(d): tests/mpi/steps.py on the GPU (one rank, NCCL) against one NumPy process; the
    largest relative difference of the parameters must be float32 rounding (< 1e-3)."""
    from scratchnet.distributed import find_mpiexec
    from scratchnet.runtime.backend import gpu_available
    if not gpu_available():
        return dict(ok=True, ran=False, summary="not run: CuPy or a CUDA device is missing")
    launcher = find_mpiexec()
    if launcher is None:
        return dict(ok=True, ran=False, summary="not run: mpi4py or mpiexec is missing")
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "tests", "mpi", "steps.py")
    cpu, gpu = os.path.join(work, "cpu.npz"), os.path.join(work, "gpu.npz")
    try:
        subprocess.run([sys.executable, script, cpu, "--single"], check=True,
                       capture_output=True, text=True, timeout=timeout)
        subprocess.run([launcher, "-n", "1", sys.executable, script, gpu, "--gpu",
                        "--sync-batchnorm"], check=True, capture_output=True, text=True,
                       timeout=timeout)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        return dict(ok=False, ran=True, summary=f"{type(e).__name__}: "
                    f"{(getattr(e, 'stderr', '') or '')[-1500:]}")
    a, b = np.load(cpu), np.load(gpu)
    worst = max(float(np.abs(a[k] - b[k]).max() / (np.abs(a[k]).max() + 1e-12))
                for k in a.files)
    return dict(ok=worst < 1e-3, ran=True, worst_relative_difference=worst,
                summary=f"GPU (NCCL) against NumPy: largest relative difference {worst:.2e}")


def write_wav(path, y, sr):
    """A 16-bit PCM WAV file with the standard library."""
    pcm = (np.clip(y, -1, 1) * 32767).astype("<i2")
    with wave.open(path, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sr)
        f.writeframes(pcm.tobytes())


def make_dataset(root, per_fold=10, sr=16000, seconds=5.0):
    """An ESC-50-shaped folder (meta/esc50.csv, audio/*.wav) of tones and noise: 5 folds of
    ``per_fold`` clips, the 50 classes in turn."""
    os.makedirs(os.path.join(root, "meta"))
    os.makedirs(os.path.join(root, "audio"))
    rng = np.random.default_rng(0)
    t = np.arange(int(sr * seconds)) / sr
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for fold in range(1, 6):
        for i in range(per_fold):
            target = ((fold - 1) * per_fold + i) % 50
            name = f"{fold}-{i}-A-{target}.wav"
            y = 0.3 * np.sin(2 * np.pi * (100 + 60 * target) * t) + 0.05 * rng.standard_normal(
                t.size)
            write_wav(os.path.join(root, "audio", name), y, sr)
            rows.append(f"{name},{fold},{target},class_{target},False,{i},A")
    with open(os.path.join(root, "meta", "esc50.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")


def run_commands(work, preset="seed"):
    """(b): the public commands with --device gpu on a generated data set."""
    from experiments import classify, evaluate, train_esc50
    t0 = time.perf_counter()
    data, out, cache = (os.path.join(work, d) for d in ("esc50", "run", "cache"))
    record = dict(ok=False, steps=[])
    try:
        make_dataset(data)
        common = ["--data", data, "--device", "gpu", "--preset", preset, "--limit", "4",
                  "--batch-size", "4", "--epochs", "2", "--folds", "1", "--out", out,
                  "--cache-dir", cache, "--no-progress"]
        partial = train_esc50.main(common + ["--stop-after", "1"])
        record["steps"].append(dict(command="train_esc50 --stop-after 1",
                                    folds_done=len(partial["folds"])))
        done = train_esc50.main(common + ["--resume"])
        fold = done["folds"]["1"]
        record["steps"].append(dict(command="train_esc50 --resume", accuracy=fold["accuracy"],
                                    epochs=fold["epochs"]))
        model = os.path.join(out, "fold1", "model.npz")
        scored = evaluate.main(["--checkpoint", model, "--data", data, "--device", "gpu",
                                "--limit", "4", "--cache-dir", cache, "--no-progress"])
        record["steps"].append(dict(command="evaluate", accuracy=scored["accuracy"],
                                    matches_training=scored["accuracy"] == fold["accuracy"]))
        clip = os.path.join(data, "audio", "1-0-A-0.wav")
        status = classify.main([clip, "--checkpoint", model, "--device", "gpu", "--json"])
        record["steps"].append(dict(command="classify --device gpu", status=status))
        record["ok"] = (not partial["folds"] and fold["epochs"] == 2 and status == 0
                        and scored["accuracy"] == fold["accuracy"])
    except BaseException as e:  # SystemExit from a CLI included: record it, go on
        record["error"] = f"{type(e).__name__}: {e}"
    record["seconds"] = time.perf_counter() - t0
    return record


def run_throughput(networks, batch, steps, rounds, use_torch):
    """(c): clips/s of training and (folded) inference, ours against PyTorch's, rounds
    alternating on the same GPU; medians of the rounds."""
    from .bench import measure_scratchnet, measure_torch, networks as all_networks
    nets = all_networks()
    have_torch = False
    if use_torch:
        try:
            import torch
            have_torch = torch.cuda.is_available()
        except ImportError:
            pass
    rows = []
    for name in networks:
        shape, cfg = nets[name]
        impls = [("scratchnet", lambda: measure_scratchnet(shape, cfg, batch, steps, 2, "gpu"))]
        if have_torch:
            impls.append(("pytorch", lambda: measure_torch(shape, cfg, batch, steps, 2, "cuda")))
        results = {impl: [] for impl, _ in impls}
        for _ in range(rounds):
            for impl, measure in impls:
                results[impl].append(measure())
        row = dict(network=name, input=list(shape), batch=batch)
        for impl, runs in results.items():
            for key in ("train_s", "infer_s", "infer_folded_s"):
                row[f"{impl}_{key.replace('_s', '')}_clips_s"] = float(
                    np.median([batch / r[key] for r in runs]))
        rows.append(row)
    return dict(rows=rows, torch=have_torch)


def markdown(report):
    lines = [f"GPU check on {report['device']} ({report['date']}), "
             f"`python -m benchmarks.gpu_check`", "",
             f"- (a) GPU tests: {'passed' if report['tests'].get('ok') else 'FAILED'} "
             f"({report['tests'].get('summary', 'not run')})",
             f"- (b) train/resume/evaluate/classify --device gpu: "
             f"{'passed' if report['commands'].get('ok') else 'FAILED'}"
             + (f" ({report['commands']['error']})" if report["commands"].get("error") else ""),
             ""]
    rows = report["throughput"].get("rows", [])
    if rows:
        lines += ["| network | input | batch | ours train | ours infer | ours folded | "
                  "PyTorch train | PyTorch infer | PyTorch folded |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            def cell(key):
                return f"{r[key]:.0f}" if key in r else "-"
            lines.append(f"| {r['network']} | {'x'.join(map(str, r['input']))} | {r['batch']} | "
                         + " | ".join(cell(f"{impl}_{kind}_clips_s")
                                      for impl in ("scratchnet", "pytorch")
                                      for kind in ("train", "infer", "infer_folded")) + " |")
        lines += ["", "clips/s, medians of alternating rounds; folded: BatchNorm folded into "
                  "the convolutions (ours: scratchnet.fusion; PyTorch: torch.fx fuse)."]
    return "\n".join(lines) + "\n"


def device_name():
    try:
        from scratchnet.runtime.backend import check_device
        cp = check_device("gpu")
        props = cp.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception as e:  # recorded, not fatal: the parts say what works
        return f"no GPU ({e})"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu_check", help="folder for gpu_check.json and .md")
    p.add_argument("--skip-tests", action="store_true", help="leave out (a)")
    p.add_argument("--preset", default="seed", help="the preset (b) trains (default: seed)")
    p.add_argument("--networks", nargs="*", default=list(NETWORKS),
                   help="networks for (c) (none: leave out (c))")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-torch", action="store_true", help="no PyTorch rows in (c)")
    p.add_argument("--test-timeout", type=int, default=240)
    p.add_argument("--skip-nccl", action="store_true", help="leave out (d)")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    report = dict(device=device_name(), date=time.strftime("%Y-%m-%d"))
    report["tests"] = (dict(ok=True, summary="left out") if args.skip_tests
                       else run_tests(args.test_timeout))
    print(f"(a) tests: {report['tests']['summary']}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as work:
        report["commands"] = run_commands(work, args.preset)
    print(f"(b) commands: ok={report['commands']['ok']} {report['commands'].get('error', '')}",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as work:
        report["nccl"] = (dict(ok=True, ran=False, summary="left out") if args.skip_nccl
                          else run_nccl(work))
    print(f"(d) NCCL: {report['nccl']['summary']}", file=sys.stderr, flush=True)
    try:
        report["throughput"] = run_throughput(args.networks, args.batch, args.steps,
                                              args.rounds, not args.no_torch)
    except Exception as e:
        report["throughput"] = dict(error=f"{type(e).__name__}: {e}")
    with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
        json.dump(report, f, indent=1)
    table = markdown(report)
    with open(os.path.join(args.out, "gpu_check.md"), "w") as f:
        f.write(table)
    print(table)
    if not (report["tests"]["ok"] and report["commands"]["ok"] and report["nccl"]["ok"]):
        sys.exit(1)
    return report


if __name__ == "__main__":
    main()
