"""Mutation check: does the suite catch small planted bugs?  Run on demand, not in CI:

    python tests/mutations.py            # each bug against the test files that should catch it
    python tests/mutations.py --full     # each bug against the whole suite (slower)
    python tests/mutations.py --only power_to_db_per_row

Each mutation replaces one exact piece of source text (found exactly once, or the mutation is
reported as stale) in a temporary copy of the checked-out files, runs pytest there as CI runs
it (no torch, librosa or GPU needed; $ESC50_DIR as set, CI=true so that a missing data set is
an error), and reports whether the suite failed (caught) or passed (missed).  The working
tree is never modified.  Exit status: the number of missed or stale mutations.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, file, original text, planted text, the test files that must catch it)
MUTATIONS = [
    ("power_to_db_per_row", "dsp/features.py",
     "log_spec.max(axis=per_item, keepdims=True) - top_db",
     "log_spec.max(axis=-1, keepdims=True) - top_db", ["tests/test_dsp.py"]),
    ("logmel_power_of_the_real_part_twice", "dsp/features.py",
     "np.add(parts[..., 0::2], parts[..., 1::2],", "np.add(parts[..., 0::2], parts[..., 0::2],",
     ["tests/test_dsp.py"]),
    ("logmel_arrays_shared_by_threads", "dsp/features.py",
     "self._kept = threading.local()  # each", "self._kept = type('K', (), {})()  # each",
     ["tests/test_dsp.py"]),
    ("schedules_linear", "scratchnet/optim.py",
     "return end + (start - end) / 2.0 * (1 + math.cos(math.pi * frac))",
     "return start + (end - start) * frac", ["tests/test_optim.py"]),
    ("smoothing_skipped_for_soft_targets", "scratchnet/losses.py",
     "        if eps:\n", "        if eps and targets.ndim == 1:\n",
     ["tests/test_forward_references.py", "tests/test_gradients.py"]),
    ("smoothing_k_minus_1", "scratchnet/losses.py",
     "q = q * (1 - eps) + eps / k", "q = q * (1 - eps) + eps / (k - 1)",
     ["tests/test_forward_references.py", "tests/test_gradients.py"]),
    ("batchnorm_dx_drops_mean_term", "scratchnet/kernels/batchnorm.py",
     "per_c, constant = scale * inv_std * dgamma / m, scale * dbeta / m",
     "per_c, constant = scale * inv_std * dgamma / m, 0 * dbeta",
     ["tests/test_gradients.py"]),
    ("col2im_assigns", "scratchnet/kernels/im2col.py",
     "dx_padded[:, taps(a, ho, stride), taps(b, wo, stride)] += cols[:, :, :, a, b]",
     "dx_padded[:, taps(a, ho, stride), taps(b, wo, stride)] = cols[:, :, :, a, b]",
     ["tests/test_forward_references.py", "tests/test_gradients.py"]),
    ("adamw_no_bias_correction", "scratchnet/optim.py",
     "step_size = self.lr / (1 - b1 ** t)", "step_size = self.lr", ["tests/test_optim.py"]),
    ("slaney_area_norm", "dsp/mel.py",
     "weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]",
     "weights *= (1.0 / (edges[2:] - edges[:-2]))[:, None]", ["tests/test_dsp.py"]),
    ("shifted_kernel_not_flipped", "scratchnet/kernels/shifted.py",
     "flipped = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)",
     "flipped = w.transpose(1, 0, 2, 3)",
     ["tests/test_gradients.py", "tests/test_shifted.py"]),
    ("dropout_unscaled", "scratchnet/layers/dropout.py",
     "x.dtype.type(1.0 / (1.0 - self.p))", "x.dtype.type(1.0)",
     ["tests/test_forward_references.py", "tests/test_gradients.py"]),
    ("synced_batchnorm_dx_sums_its_own_shard", "scratchnet/kernels/batchnorm.py",
     "    if group is None:\n        return dbeta, dgamma\n", "    return dbeta, dgamma\n",
     ["tests/test_distributed.py"]),
    ("data_parallel_loss_share_dropped", "scratchnet/distributed.py",
     "dx = self.model.backward(dlogits * dlogits.dtype.type(self.share))",
     "dx = self.model.backward(dlogits)", ["tests/test_distributed.py"]),
    ("dropout_mask_of_the_shard_alone", "scratchnet/layers/dropout.py",
     "draw = self._rng.random((n,) + x.shape[1:], dtype=x.dtype)[rows]",
     "draw = self._rng.random(x.shape, dtype=x.dtype)", ["tests/test_distributed.py"]),
    ("stem_pool_first_gradient_unscaled", "scratchnet/kernels/stem.py",
     "scaled = scale_columns(d2, scale)", "scaled = d2", ["tests/test_gradients.py"]),
    ("runtime_blas_loads_with_its_defaults", "scratchnet/runtime/blas.py",
     "                os.environ.setdefault(key, value)", "                pass",
     ["tests/test_runtime_blas.py"]),
    ("runtime_blas_ignores_a_transposed_factor", "scratchnet/runtime/blas.py",
     "        return m, 1\n", "        return m, 0\n", ["tests/test_runtime_blas.py"]),
    ("long_sum_drops_its_last_part", "scratchnet/runtime/blas.py",
     "    for part in parts[1:]:\n", "    for part in parts[1:-1]:\n",
     ["tests/test_runtime_blas.py", "tests/test_conv_algorithms.py"]),
    ("long_sum_leaves_blas_on_one_thread", "scratchnet/runtime/blas.py",
     "        lib.set_threads(threads)", "        lib.set_threads(1)",
     ["tests/test_runtime_blas.py"]),
    ("long_sum_parts_in_the_other_layout", "scratchnet/runtime/blas.py",
     "            return cls.TRANS, max(m.strides[1] // item, m.shape[0], 1)",
     "            return cls.NO_TRANS, max(m.strides[1] // item, m.shape[0], 1)",
     ["tests/test_runtime_blas.py", "tests/test_gemm_split.py"]),
    ("dropout_device_generator", "scratchnet/layers/dropout.py",
     "keep = get_array_module(x).asarray(draw >= self.p)",
     "xp = get_array_module(x)\n        self._gen = getattr(self, '_gen', None) or "
     "xp.random.default_rng(0)\n        keep = self._gen.random(x.shape, dtype=x.dtype) >= self.p",
     ["tests/test_gpu_path.py"]),
    ("upload_loses_the_layout", "scratchnet/runtime/backend.py",
     "return _keeping_layout(_cupy.asarray, np.asarray(x))", "return _cupy.asarray(x)",
     ["tests/test_gpu_path.py"]),
    ("cpu_policy_takes_the_dearest", "scratchnet/kernels/conv_policy.py",
     "        return min(costs, key=costs.get)", "        return max(costs, key=costs.get)",
     ["tests/test_shifted.py", "tests/test_short_maps.py"]),
    ("cost_model_forgets_the_output_read_back", "scratchnet/kernels/conv_cost.py",
     "m * n * (2 if accumulate else 1)", "m * n", ["tests/test_shifted.py"]),
    ("feature_cache_ignores_the_code", "experiments/esc50.py",
     "\"code\": source_digest()}", "\"code\": \"\"}", ["tests/test_audio_io.py"]),
    ("evaluate_ignores_stored_shifts", "experiments/evaluate.py",
     "else clf.shifts for clf in models]", "else [0] for clf in models]",
     ["tests/test_train_smoke.py"]),
    ("ensemble_scores_its_first_network", "experiments/inference.py",
     "for clf, x, shifts in zip(models, inputs, shift_sets)) / len(models)",
     "for clf, x, shifts in zip(models[:1], inputs, shift_sets)) / len(models)", ["tests/test_distill.py"]),
    ("student_ignores_its_teachers", "experiments/fold_run.py",
     "tb = yb if data.targets is None else data.targets[xp.asarray(idx)]", "tb = yb",
     ["tests/test_distill.py"]),
    ("mask_never_applied", "experiments/augment.py",
     "return xp.where(xp.asarray(masked), x.dtype.type(fill), x)", "return x",
     ["tests/test_augment.py"]),
    ("deltas_backward_not_transposed", "scratchnet/layers/deltas.py",
     "dx = g[k] + along_time(dx, d)\n", "dx = g[k] + along_time(dx, d.T)\n",
     ["tests/test_gradients.py"]),
    ("deltas_edges_wrap", "scratchnet/layers/deltas.py",
     "np.add.at(d, (rows, np.minimum(rows + n, frames - 1)), n / norm)",
     "np.add.at(d, (rows, (rows + n) % frames), n / norm)",
     ["tests/test_forward_references.py"]),
    ("between_class_gain_sign", "experiments/augment.py",
     "10 ** ((gains - gains[perm]) / 20)", "10 ** ((gains[perm] - gains) / 20)",
     ["tests/test_augment.py"]),
    ("between_class_amplitude_weight", "experiments/augment.py",
     "w = np.clip(p ** 2 / (p ** 2 + (1 - p) ** 2), 1e-7, 1 - 1e-7)",
     "w = np.clip(p, 1e-7, 1 - 1e-7)", ["tests/test_augment.py"]),
    ("large_shifted_gradient_axes_swapped", "scratchnet/kernels/shifted.py",
     "return dw.reshape(k, c_out, k, c).transpose(1, 0, 2, 3)",
     "return dw.reshape(k, c_out, k, c).transpose(1, 2, 0, 3)",
     ["tests/test_conv_algorithms.py", "tests/test_shifted.py"]),
    ("large_patch_gradient_transposed_anyway", "scratchnet/kernels/im2col.py",
     "return k > c_out and k * c_out < LARGE_GRADIENT", "return k > c_out",
     ["tests/test_conv_algorithms.py"]),
    ("tap_matrices_read_across_the_kernel", "scratchnet/kernels/shifted.py",
     "weight.transpose(2, 3, 0, 1)).transpose(0, 1, 3, 2)",
     "weight.transpose(3, 2, 0, 1)).transpose(0, 1, 3, 2)",
     ["tests/test_shifted.py", "tests/test_conv_algorithms.py"]),
    ("shifted_block_reads_from_its_start", "scratchnet/kernels/shifted.py",
     "start = lo + (a - p) * r     # lead", "start = g0 + (a - p) * r     # lead",
     ["tests/test_shifted.py"]),
    ("gradient_block_patches_from_the_blocks_row", "scratchnet/kernels/shifted.py",
     "start = lo + (a - p) * r                    # Q's row",
     "start = lo                    # Q's row",
     ["tests/test_shifted.py"]),
    ("parts_summed_keep_the_last_only", "scratchnet/runtime/blas.py",
     "        out += part\n", "        out[...] = part\n",
     ["tests/test_shifted.py", "tests/test_conv_algorithms.py", "tests/test_runtime_blas.py"]),
    ("patch_blocks_scatter_into_the_first_samples", "scratchnet/kernels/patch_gemm.py",
     "scatter_patches(dx_padded[a:b], ", "scatter_patches(dx_padded[:b - a], ",
     ["tests/test_conv_algorithms.py"]),
    ("patch_blocks_pad_the_first_samples", "scratchnet/kernels/patch_gemm.py",
     "to_channels_last(x[a:b], ", "to_channels_last(x[:b - a], ",
     ["tests/test_conv_algorithms.py"]),
    ("tap_planes_of_a_phase_read_across_for_down", "scratchnet/kernels/im2col.py",
     "(sr, sc, sn, sr, sc))", "(sc, sr, sn, sr, sc))",
     ["tests/test_forward_references.py", "tests/test_conv_algorithms.py"]),
    ("block_pieces_grouped_by_megabytes", "scratchnet/runtime/blas.py",
     "lib.product), pieces, elements, np, pieces)", "lib.product), pieces, elements, np)",
     ["tests/test_runtime_blas.py"]),
    ("crop_forgets_the_rows_two_blocks_share", "scratchnet/kernels/shifted.py",
     "for g in bounds[1:-1] if g % wq}):", "for g in bounds[1:-1] if g % wq})[1:]:",
     ["tests/test_shifted.py"]),
    ("relu_always_in_place", "scratchnet/layers/activation.py",
     "out=x if self.inplace else None", "out=x",
     ["tests/test_state_and_errors.py"]),
    ("a_pass_keeps_the_last_passs_state", "scratchnet/layers/base.py",
     "        self.release_saved()\n        for layer in self:", "        for layer in self:",
     ["tests/test_state_and_errors.py"]),
    ("one_thread_product_drops_beta", "scratchnet/runtime/blas.py",
     "a.ctypes.data, lda, b.ctypes.data, ldb, beta, out.ctypes.data,",
     "a.ctypes.data, lda, b.ctypes.data, ldb, 0.0, out.ctypes.data,",
     ["tests/test_shifted.py", "tests/test_runtime_blas.py"]),
    ("cpu128bc_schedule_not_the_adopted_one", "experiments/models.py",
     'train=dict(PRESETS["cpu128"]["train"], epochs=150, bc_mix=1))',
     'train=dict(PRESETS["cpu128"]["train"], epochs=100, bc_mix=1))', ["tests/test_summary.py"]),
]


def copy_tree(dest):
    """The files git tracks (and untracked, unignored ones), copied to ``dest``."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for rel in listed.splitlines():
        src = os.path.join(ROOT, rel)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(dest, rel))


def run(copy, name, path, old, new, tests, full):
    target = os.path.join(copy, path)
    with open(target) as f:
        text = f.read()
    if text.count(old) != 1:
        return "stale", 0.0  # the source changed: the mutation must be rewritten
    with open(target, "w") as f:
        f.write(text.replace(old, new))
    env = dict(os.environ, CI="true", PYTHONDONTWRITEBYTECODE="1")
    if env.get("ESC50_DIR"):  # the copy runs elsewhere: a relative path would miss the data
        env["ESC50_DIR"] = os.path.abspath(env["ESC50_DIR"])
    t0 = time.perf_counter()
    try:
        result = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p",
                                 "no:cacheprovider", *([] if full else tests)],
                                cwd=copy, env=env, capture_output=True, text=True)
    finally:
        with open(target, "w") as f:
            f.write(text)
    return ("caught" if result.returncode != 0 else "missed"), time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="run the whole suite for each bug")
    p.add_argument("--only", nargs="+", help="names of the mutations to run")
    args = p.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m[0] in args.only]
    failures = 0
    with tempfile.TemporaryDirectory() as copy:
        copy_tree(copy)
        print(f"{'mutation':40s} {'result':8s} seconds")
        for name, path, old, new, tests in chosen:
            outcome, seconds = run(copy, name, path, old, new, tests, args.full)
            failures += outcome != "caught"
            print(f"{name:40s} {outcome:8s} {seconds:7.1f}", flush=True)
    print(f"{len(chosen) - failures} of {len(chosen)} caught")
    return failures


if __name__ == "__main__":
    sys.exit(main())
