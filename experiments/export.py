"""Export a trained model for shipping: a float16 .npz, or an ONNX graph from raw audio to
class probabilities.  The format follows OUT's suffix.

    python -m experiments.export results/cpu128bc-5fold/fold1/model.npz \
        experiments/checkpoints/cpu128bc_fold1.npz
    python -m experiments.export experiments/checkpoints/cpu128bc_fold1.npz model.onnx

.npz: float16 keeps 11 significant bits, far finer than the weights' noise after training;
loading casts back to float32 (``load_state_dict`` copies into the model's own float32
arrays).  The metadata (features, model, normalisation, classes, accuracy) is kept as is.

.onnx: the whole front end and the network in one graph (experiments.deploy.onnx_graph):
input "audio" [batch, samples] (mono float32 at the model's rate, samples = its 5 s window),
output "probabilities" [batch, classes], the class names in metadata_props["classes"].  A
float checkpoint gives a float32 graph, an int8 one (experiments.quantize) a QDQ graph; a
transformer (--preset ast-tiny) exports too.
Needs the ``export`` extra (onnx; onnxruntime to run it).
"""
import os

import numpy as np

from scratchnet import load_checkpoint, save_checkpoint

from . import cli


def export(src, dst, dtype=np.float16):
    state, meta = load_checkpoint(src)
    small = {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in state.items()}
    meta = dict(meta, stored_dtype=np.dtype(dtype).name)
    save_checkpoint(dst, small, meta)
    return dst


def export_onnx(src, dst):
    """The classifier in ``src`` as an ONNX graph at ``dst``, checked by onnx.checker."""
    try:
        import onnx
    except ImportError:
        raise cli.CommandError("ONNX export needs the onnx package: pip install -e "
                               "\".[export]\"") from None
    from .deploy.onnx_graph import classifier_graph
    from .inference import Classifier
    try:
        model = classifier_graph(Classifier(src))
    except ValueError as e:  # a layer or front end the graph builder does not know
        raise cli.CommandError(f"{src}: {e}") from e
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, dst)
    return dst


def main(argv=None):
    p = cli.parser("experiments.export", __doc__)
    p.add_argument("src", type=cli.existing_file, help="model.npz from train_esc50")
    p.add_argument("dst", type=cli.output_file,
                   help="what to write: a float16 .npz, or an .onnx graph")
    args = p.parse_args(argv)
    suffix = os.path.splitext(args.dst)[1].lower()
    if suffix not in (".npz", ".onnx"):
        p.error(f"argument dst: the format follows the suffix, .npz or .onnx; got "
                f"{args.dst!r}")
    if suffix == ".onnx":
        export_onnx(args.src, args.dst)
    else:
        export(args.src, args.dst)
    print(args.dst)


if __name__ == "__main__":
    cli.run(main)
