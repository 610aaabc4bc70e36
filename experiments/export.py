"""Shrink a trained model.npz for shipping: weights and statistics stored as float16.

    python -m experiments.export results/cpu128bc-5fold/fold1/model.npz \
        experiments/checkpoints/cpu128bc_fold1.npz

float16 keeps 11 significant bits, far finer than the weights' noise after training; loading
casts back to float32 (``load_state_dict`` copies into the model's own float32 arrays).  The
metadata (features, model, normalisation, classes, accuracy) is kept as is.
"""
from scratchnet.runtime import configure

configure()  # first, before NumPy loads OpenBLAS (scratchnet.runtime)

import numpy as np

from scratchnet import load_checkpoint, save_checkpoint

from . import cli


def export(src, dst, dtype=np.float16):
    state, meta = load_checkpoint(src)
    small = {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in state.items()}
    meta = dict(meta, stored_dtype=np.dtype(dtype).name)
    save_checkpoint(dst, small, meta)
    return dst


def main(argv=None):
    p = cli.parser("experiments.export", __doc__)
    p.add_argument("src", type=cli.existing_file, help="model.npz from train_esc50")
    p.add_argument("dst", type=cli.output_file, help="the smaller copy to write (.npz)")
    args = p.parse_args(argv)
    export(args.src, args.dst)
    print(args.dst)


if __name__ == "__main__":
    cli.run(main)
