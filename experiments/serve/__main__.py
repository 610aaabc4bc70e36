"""Serve the web app: python -m experiments.serve [--port 8000] [--checkpoint FILE_OR_FOLDER]

Open http://127.0.0.1:8000/ in a browser, drop an audio file on the page or record one, and
see its classes, its waveform with each window's label, its log-Mel and the feature maps.
The API: POST the audio file to /api/classify (the raw body, or the multipart field "file").
"""
import argparse
import sys

from .. import cli
from .models import Shelf, find_checkpoints
from .server import Limits, make_server

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def parse_args(argv=None):
    p = cli.parser("experiments.serve", __doc__)
    p.add_argument("--port", type=port_number, default=8000, help="TCP port (8000; 0: any free)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (127.0.0.1: this machine only; another one "
                        "opens the app to the network, with a warning)")
    p.add_argument("--checkpoint", type=cli.existing_path, metavar="FILE_OR_FOLDER",
                   help="a model.npz, or a folder whose classifier checkpoints are all offered "
                        "(default: the packaged model)")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--max-seconds", type=cli.positive_float, default=600.0,
                   help="longest clip accepted, in seconds (600)")
    p.add_argument("--max-mb", type=cli.positive_float, default=50.0,
                   help="largest upload accepted, in MB (50)")
    return p.parse_args(argv)


def port_number(text):
    value = cli.nonnegative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 0..65535, got {text!r}")
    return value


def main(argv=None):
    args = parse_args(argv)
    shelf = Shelf(find_checkpoints(args.checkpoint), args.device)
    shelf.get()  # the default model loads now: a broken one is reported before serving
    if args.host not in LOOPBACK:
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use "
              "the app and upload files to it", file=sys.stderr)
    server = make_server(shelf, args.host, args.port,
                         Limits(args.max_seconds, args.max_mb))
    host, port = server.server_address[:2]
    print(f"serving {len(shelf.paths)} model(s) at http://{host}:{port}/ (Ctrl-C stops)",
          file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    cli.run(main)
