"""What every command shares: arguments checked when they are parsed, and one error path.

A command is ``main(argv)`` run through :func:`run`.  Its parser comes from :func:`parser`,
whose argument types (:func:`positive_int`, :func:`output_dir`, ...) reject a bad value at
parse time: argparse then prints its usage line and one ``error:`` line naming the argument,
the value and what is allowed, and exits with status 2.  Failures that are expected in use
(data, network, files, checkpoints, devices) are raised as exceptions that :func:`run` turns
into one ``error:`` line on stderr and exit status 1; anything else is a bug and keeps its
traceback, as every error does under ``--debug``.
"""
import argparse
import os
import signal
import sys


class CommandError(Exception):
    """A failure the user can act on; its message is the whole report."""


def _number(kind, text, least, least_allowed, what):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):  # NaN and infinities
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    if value < least or (value == least and not least_allowed):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text):
    """A whole number >= 1 (epochs, clips, batch sizes, counts)."""
    return _number(int, text, 1, True, "a whole number >= 1")


def nonnegative_int(text):
    """A whole number >= 0 (seeds, optional counts where 0 means none)."""
    return _number(int, text, 0, True, "a whole number >= 0")


def positive_float(text):
    """A finite number > 0 (seconds, rates)."""
    return _number(float, text, 0.0, False, "a number > 0")


def fraction(text):
    """A finite number in [0, 1) (a probability that must leave something: dropout)."""
    value = _number(float, text, 0.0, True, "a number in [0, 1)")
    if value >= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def fold(text):
    """One of ESC-50's five folds."""
    value = _number(int, text, 1, True, "a fold among 1..5")
    if value > 5:
        raise argparse.ArgumentTypeError(f"expected a fold among 1..5, got {text!r}")
    return value


def existing_file(text):
    """A path to a readable file."""
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, not a file")
    if not os.access(text, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text!r} is not readable")
    return text


def stdin_or_file(text):
    """- (standard input) or a readable file: a stream's source."""
    return text if text == "-" else existing_file(text)


def existing_dir(text):
    """A path to a folder that exists."""
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"no such folder: {text!r}")
    return text


def existing_path(text):
    """A file or a folder that exists."""
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"no such file or folder: {text!r}")
    return text


def output_dir(text):
    """A folder that exists and is writable, or can be made: its nearest existing ancestor is
    a writable folder.  Nothing is created here (a command refused later leaves no trace)."""
    path = os.path.abspath(text)
    if os.path.exists(path) and not os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder")
    ancestor = path
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise argparse.ArgumentTypeError(f"{text!r} cannot be made: {ancestor!r} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text!r} is not writable ({ancestor!r} is not)")
    return text


def output_file(text):
    """A file that can be written: not a folder, in a folder that is or can be made."""
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, not a file")
    output_dir(os.path.dirname(os.path.abspath(text)))
    if os.path.exists(text) and not os.access(text, os.W_OK):
        raise argparse.ArgumentTypeError(f"{text!r} is not writable")
    return text


def parser(prog, doc):
    """The command's ArgumentParser, with ``--debug`` (tracebacks for every error)."""
    p = argparse.ArgumentParser(prog=f"python -m {prog}", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true",
                   help="show the full traceback of any error (for reporting a bug)")
    return p


def data_arguments(p):
    """--data and --cache-dir, as every command that reads ESC-50 has them."""
    p.add_argument("--data", type=existing_dir,
                   help="ESC-50 root (default: $ESC50_DIR, else ./data/ESC-50)")
    p.add_argument("--cache-dir", type=output_dir,
                   help="log-Mel feature cache (default ~/.cache/scratchnet)")


def expected_errors():
    """The exceptions that mean "the input or the machine", not "a bug": each module that
    defines one keeps it, so they are gathered here when a command fails."""
    from dsp.io import AudioError
    from scratchnet.checkpoint import CheckpointError
    from scratchnet.distributed import DistributedError
    from scratchnet.runtime.backend import DeviceError
    return (CommandError, OSError, AudioError, CheckpointError, DeviceError, DistributedError,
            MemoryError)


def run(main, argv=None):
    """Call ``main(argv)`` and exit: with its return value, with 1 and one ``error:`` line for
    an expected failure, quietly when the reader of stdout went away (``| head``)."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        status = main(argv)
        sys.stdout.flush()  # a closed pipe is found here, inside the try
    except BrokenPipeError:
        # The reader has gone (| head): nothing more can be said there.  Point stdout at
        # /dev/null so that the interpreter's own flush at exit stays quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(128 + signal.SIGPIPE)
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        if debug or not isinstance(e, expected_errors()):
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(1)
    sys.exit(status if isinstance(status, int) else 0)


def end_job(job, error, debug=False):
    """A rank's own failure in an MPI job: its ``error:`` line, naming the rank (a traceback
    for a bug, or with --debug), then the whole job ended, since the other ranks would wait
    for this one in their next collective."""
    if isinstance(error, KeyboardInterrupt):
        print(f"rank {job.rank}: interrupted", file=sys.stderr, flush=True)
        job.abort(130)
    if isinstance(error, SystemExit):
        code = error.code if isinstance(error.code, int) else 1
        if code == 0:
            raise error
        print(f"error: rank {job.rank}: exited with status {code}", file=sys.stderr,
              flush=True)
        job.abort(code)
    if debug or not isinstance(error, expected_errors()):
        import traceback
        traceback.print_exception(type(error), error, error.__traceback__)
    print(f"error: rank {job.rank}: {one_line(error)}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    job.abort(1)


def one_line(error):
    """The error's message on one line (a MemoryError has none of its own)."""
    if isinstance(error, MemoryError):
        return "out of memory" + (f" ({error})" if str(error) else "")
    text = str(error) or type(error).__name__
    return " ".join(text.split())
