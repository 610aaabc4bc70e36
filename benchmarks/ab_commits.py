"""Old and new code alternating: the speed of a change, measured as this project measures one.

    python -m benchmarks.ab_commits 125919f                      # that commit against the tree
    python -m benchmarks.ab_commits 125919f --models reference preset:cpu128 --pairs 6
    python -m benchmarks.ab_commits 01fe888 --models shape:s7-w64-128x431-b8 --batch 8

The old commit is checked out in a temporary git worktree; each pair runs the speed harness
once in each tree, each run in its own process, the order alternating from pair to pair (so
that neither side always runs first after a pause), and prints for every figure the new/old
ratio of each pair and their median.  The harness is ``benchmarks.bench`` where the tree has
it, else the older ``experiments.bench``; PyTorch is left out (``--no-torch``).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURES = ("train_clips_s", "infer_clips_s", "infer_folded_clips_s")


def harness(tree):
    """The speed harness's module name in a source tree."""
    return ("benchmarks.bench" if os.path.isfile(os.path.join(tree, "benchmarks", "bench.py"))
            else "experiments.bench")


def run_bench(tree, models, steps, out, batch=None):
    """One run of the harness in ``tree`` (one round, no PyTorch; the harness's batch unless
    ``batch``); returns its JSON report."""
    cmd = [sys.executable, "-m", harness(tree), "--models", *models, "--steps", str(steps),
           "--rounds", "1", "--no-torch", "--json", out]
    if batch is not None:
        cmd += ["--batch", str(batch)]
    done = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
    report = None
    if done.returncode == 0 and os.path.isfile(out):
        with open(out) as f:
            report = json.load(f)
    if report is None or any("scratchnet" not in report["models"].get(m, {}) for m in models):
        output = (done.stdout + done.stderr)[-2000:]
        sys.exit(f"error: the speed harness failed in {tree}:\n{output}")
    return report


def compare(old_tree, new_tree, models, steps, pairs, work, batch=None):
    """{(model, figure): (old values, new values)} over ``pairs`` alternating pairs."""
    values = {(m, k): ([], []) for m in models for k in FIGURES}
    for i in range(pairs):
        sides = [(0, old_tree), (1, new_tree)]
        for side, tree in (sides if i % 2 else sides[::-1]):
            report = run_bench(tree, models, steps, os.path.join(work, f"{i}-{side}.json"),
                               batch)
            for m in models:
                for k in FIGURES:
                    values[(m, k)][side].append(report["models"][m]["scratchnet"][k])
        print(f"pair {i + 1} of {pairs} done", file=sys.stderr, flush=True)
    return values


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.ab_commits", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old", help="the commit to compare against (any git revision)")
    p.add_argument("--models", nargs="+", default=["reference"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--pairs", type=int, default=6)
    p.add_argument("--batch", type=int, help="the clips a step (default: the harness's, 32)")
    p.add_argument("--json", help="also write the figures there")
    args = p.parse_args(argv)
    if args.pairs < 1:
        p.error(f"--pairs must be at least 1, got {args.pairs}")
    if args.batch is not None and args.batch < 1:
        p.error(f"--batch must be at least 1, got {args.batch}")
    with tempfile.TemporaryDirectory() as work:
        old_tree = os.path.join(work, "old")
        made = subprocess.run(["git", "worktree", "add", "--detach", old_tree, args.old],
                              cwd=ROOT, capture_output=True, text=True)
        if made.returncode:
            sys.exit(f"error: cannot check out {args.old!r}: {made.stderr.strip()}")
        try:
            values = compare(old_tree, ROOT, args.models, args.steps, args.pairs, work,
                             args.batch)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", old_tree], cwd=ROOT,
                           capture_output=True)
    rows = []
    for (model, figure), (old, new) in values.items():
        ratios = [n / o for n, o in zip(new, old)]
        rows.append(dict(model=model, figure=figure, old=statistics.median(old),
                         new=statistics.median(new), ratios=ratios,
                         median_ratio=statistics.median(ratios)))
        print(f"{model:14s} {figure:22s} old {rows[-1]['old']:8.1f}  new {rows[-1]['new']:8.1f}"
              f"  new/old {' '.join(f'{r:.2f}' for r in ratios)}  median "
              f"{rows[-1]['median_ratio']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(old=args.old, rows=rows), f, indent=1)
    return rows


if __name__ == "__main__":
    main()
