"""Model presets: a network and the log-Mel features it expects, chosen together.

- ``seed``: the seed project's design for the GPU, a ResNet-34-shaped network (stages [3, 4, 6, 3]
  of widths [64, 128, 256, 512], 7x7/2 stem, 3x3/2 max-pool, dropout 0.5) on 128-mel inputs.
  The seed used 44.1 kHz audio with hop 512 (11.6 ms); at our 16 kHz that hop is 186 samples,
  giving the same 1 x 128 x 431 input.
- ``cpu``: compute-lean for 2 CPU cores: stages [2, 2, 2, 2] of widths [32, 64, 128, 256] on
  64 mels with a 20 ms hop (1 x 64 x 251), about 7x fewer FLOPs than ``seed``.
- ``cpu128``: the same network on 128 mels (1 x 128 x 251, the seed's frequency resolution),
  about twice the FLOPs of ``cpu``, trained for 100 epochs (the seed's count), the input
  standardised per mel bin, Mixup in the power domain and a pitch shift of up to 4 mel bins
  (README: its 5-fold accuracy, the faster point of the accuracy/time frontier).
- ``cpu128bc``: ``cpu128`` trained for 150 epochs with between-class mixing on every batch in
  place of Mixup (adopted on the validation fold 2, fold 1 held out: 82.25% against 75.75%,
  epochs 141-150 82.175% against epochs 91-100 76.025%; docs/experiments.md): the default
  on the CPU and the shipped model's recipe (README: its 5-fold accuracy).
Each preset also carries its training recipe (the seed's, with the SpecAugment masks scaled to
the input size) and ``tta_views``, the number of circular time shifts whose predictions are
averaged when the fold is scored (1: the plain forward pass), and ``per_mel_norm``: 1
standardises the input per mel bin, 0 with one mean and std; ``mixup_power``: 1 mixes clips
by adding their powers (as sounds mix), 0 by interpolating their dB values (the seed's);
``spec_masks``: how many SpecAugment bands per axis each clip gets (1, as the seed);
``freq_shift``: the largest shift along the mel axis, in bins, of each training clip (0: none,
as the seed; ``augment.freq_shift``); ``bc_mix``: 1 mixes every batch by between-class
learning's gain-aware ratio (``augment.between_class``) in place of Mixup (0: Mixup);
``distill``: the weight beta of the teachers' averaged probabilities in each training
target (0: the labels alone; ``experiments.distill``, with ``--teachers``).
"""
import json

from scratchnet import AudioSpectrogramTransformer, ResNet

PRESETS = {
    "seed": dict(
        features=dict(sr=16000, n_fft=1024, hop_length=186, n_mels=128, fmin=0.0, fmax=8000.0),
        model=dict(widths=[64, 128, 256, 512], depths=[3, 4, 6, 3], stem_kernel=7,
                   stem_stride=2, stem_pool=True, dropout=0.5),
        train=dict(epochs=100, batch_size=32, lr=5e-4, max_lr=2e-3, warmup=0.1,
                   weight_decay=0.01, label_smoothing=0.1, mixup_alpha=0.2, mixup_prob=0.3,
                   freq_mask=30, time_mask=80, spec_masks=1, time_shift=0.2, clip_norm=5.0,
                   ema_decay=0.0, tta_views=1, per_mel_norm=0, mixup_power=0, freq_shift=0,
                   bc_mix=0, distill=0),
    ),
    "cpu": dict(
        features=dict(sr=16000, n_fft=1024, hop_length=320, n_mels=64, fmin=0.0, fmax=8000.0),
        model=dict(widths=[32, 64, 128, 256], depths=[2, 2, 2, 2], stem_kernel=7,
                   stem_stride=2, stem_pool=True, dropout=0.3),
        train=dict(epochs=80, batch_size=32, lr=5e-4, max_lr=2e-3, warmup=0.1,
                   weight_decay=0.01, label_smoothing=0.1, mixup_alpha=0.2, mixup_prob=0.3,
                   freq_mask=15, time_mask=46, spec_masks=1, time_shift=0.2, clip_norm=5.0,
                   ema_decay=0.0, tta_views=1, per_mel_norm=0, mixup_power=0, freq_shift=0,
                   bc_mix=0, distill=0),
    ),
}
# The cpu network on 128 mels: the input height, the frequency mask (the seed's 30), the epoch
# count (the seed's 100), the input standardised per mel bin with Mixup in the power domain
# (78.75% on fold 1 against 78.25% without these two, README), and a random pitch shift of up
# to 4 mel bins (adopted on the validation fold 2, fold 1 held out: 75.75% against 75.00%,
# epochs 91-100 76.025% against 74.975%, README).
PRESETS["cpu128"] = dict(
    PRESETS["cpu"],
    features=dict(PRESETS["cpu"]["features"], n_mels=128),
    train=dict(PRESETS["cpu"]["train"], freq_mask=30, epochs=100, per_mel_norm=1,
               mixup_power=1, freq_shift=4))
# cpu128 with between-class mixing over a longer schedule: the mixtures were still being
# fitted at 100 epochs (training loss falling, held-out accuracy rising; docs/experiments.md).
PRESETS["cpu128bc"] = dict(
    PRESETS["cpu128"],
    train=dict(PRESETS["cpu128"]["train"], epochs=150, bc_mix=1))


# An Audio Spectrogram Transformer sized for 2 cores, on cpu128's input (128 mels x 251
# frames): 16 x 16 patches at stride 16 (8 x 15 = 120 tokens), 4 pre-norm layers of width 128
# with 4 heads, GELU MLPs of 512; trained with cpu128bc's between-class mixing and
# augmentations, at a transformer's learning rates (peak 1e-3) and weight decay (0.05).
# The recipe as written won its validation run against half the learning rates (61.75%
# against 60.25% on fold 2; docs/experiments.md, 2026-12-07).
PRESETS["ast-tiny"] = dict(
    features=dict(PRESETS["cpu128"]["features"]),
    model=dict(kind="ast", input_size=[128, 251], dim=128, depth=4, heads=4, mlp_ratio=4,
               patch=16, patch_stride=16, dropout=0.1, head_dropout=0.0),
    train=dict(PRESETS["cpu128bc"]["train"], lr=1e-4, max_lr=1e-3, weight_decay=0.05))


def get_preset(name):
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


def parse_recipe(items, train):
    """["mixup_prob=1", ...] -> {"mixup_prob": 1.0}, checked against the recipe's keys and
    keeping each value's type (numbers stay numbers)."""
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--recipe expects KEY=VALUE, got {item!r}")
        if key not in train:
            raise ValueError(f"--recipe: unknown key {key!r}; the recipe has "
                             f"{', '.join(sorted(train))}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"--recipe {key}: expected a number, got {text!r}")
        out[key] = value
    return out


def check_recipe(train, teachers=()):
    """Raise ValueError naming the first entry of a training recipe that cannot train."""
    for key, least in (("tta_views", 1), ("spec_masks", 0), ("freq_shift", 0)):
        value = train[key]
        if not isinstance(value, int) or value < least:
            raise ValueError(f"--recipe {key}: expected a whole number >= {least}, "
                             f"got {value}")
    for key in ("epochs", "batch_size"):
        if not isinstance(train[key], int) or train[key] < 1:
            raise ValueError(f"{key}: expected a whole number >= 1, got {train[key]}")
    for key in ("mixup_prob", "warmup"):
        if not 0 <= train[key] <= 1:
            raise ValueError(f"--recipe {key}: expected a number in [0, 1], got {train[key]}")
    for key in ("lr", "max_lr"):
        if not train[key] > 0:
            raise ValueError(f"--recipe {key}: expected a learning rate > 0, got {train[key]}")
    for key in ("weight_decay", "mixup_alpha", "clip_norm", "freq_mask", "time_mask",
                "time_shift"):
        if not train[key] >= 0:
            raise ValueError(f"--recipe {key}: expected a number >= 0, got {train[key]}")
    if not 0 <= train["label_smoothing"] < 1:
        raise ValueError(f"--recipe label_smoothing: expected a number in [0, 1), got "
                         f"{train['label_smoothing']}")
    if not 0 <= train["ema_decay"] < 1:
        raise ValueError(f"--recipe ema_decay: expected a number in [0, 1) (0: no weight "
                         f"average), got {train['ema_decay']}")
    if not 0 <= train["distill"] <= 1:
        raise ValueError(f"--recipe distill: expected a weight in [0, 1], got "
                         f"{train['distill']}")
    if bool(train["distill"]) != bool(teachers):
        raise ValueError("distillation needs both --teachers MODEL ... and --recipe "
                         "distill=BETA (0 < BETA <= 1)")
    for key in ("bc_mix", "per_mel_norm", "mixup_power"):
        if train[key] not in (0, 1):
            raise ValueError(f"--recipe {key}: expected 0 or 1, got {train[key]}")
    if train["bc_mix"] and not train["mixup_power"]:
        raise ValueError("--recipe bc_mix=1 mixes clips as sounds, by their powers: it "
                         "needs mixup_power=1")


def run_config(preset, epochs=None, batch_size=None, pool=None, deltas=None, widths=None,
               dropout=None, recipe=(), teachers=()):
    """A new {features, model, train} dict: the preset with the command's overrides, checked
    (ValueError naming the first bad one)."""
    cfg = json.loads(json.dumps(get_preset(preset)))  # a deep copy; the presets stay as they are
    model, train = cfg["model"], cfg["train"]
    if epochs is not None:
        train["epochs"] = epochs
    if batch_size is not None:
        train["batch_size"] = batch_size
    if model.get("kind") == "ast" and any(v is not None for v in (pool, deltas, widths)):
        raise ValueError(f"--pool, --deltas and --widths shape a ResNet; {preset} is an Audio "
                         "Spectrogram Transformer")
    if pool is not None:
        model["pool"] = pool
    if deltas is not None:
        model["deltas"] = deltas
    if widths is not None:
        if len(widths) != len(model["depths"]) or min(widths) < 1:
            raise ValueError(f"--widths: expected {len(model['depths'])} positive channel "
                             f"counts (one per stage of {preset}), got {list(widths)}")
        model["widths"] = list(widths)
    if dropout is not None:
        if not 0.0 <= dropout < 1.0:  # also false for NaN
            raise ValueError(f"--dropout: expected a probability in [0, 1), got {dropout}")
        model["dropout"] = dropout
    train.update(parse_recipe(recipe, train))
    check_recipe(train, teachers)
    return cfg


def build_model(model_config, num_classes=50, seed=0, input_grad=True):
    """The network of a preset's ``model`` entry (as stored in checkpoints): a ResNet, or with
    ``kind="ast"`` an Audio Spectrogram Transformer.  Training passes input_grad=False: the
    gradient w.r.t. the log-Mel input is never needed there."""
    config = dict(model_config)
    kind = config.pop("kind", "resnet")
    if kind == "ast":
        return AudioSpectrogramTransformer(in_channels=1, num_classes=num_classes, seed=seed,
                                           input_grad=input_grad, **config)
    if kind != "resnet":
        raise ValueError(f"unknown model kind {kind!r}: expected 'resnet' or 'ast'")
    return ResNet(in_channels=1, num_classes=num_classes, seed=seed, input_grad=input_grad,
                  **config)
