"""The HTTP side: one page, its assets and a JSON API, on the standard library's server.

    GET  /                      the page (assets/index.html)
    GET  /assets/NAME           its script and style
    GET  /api/models            the models offered, each with its card, and the limits
    POST /api/classify[?model=ID&hop=S]
                                the audio file as the raw body (any Content-Type) or as the
                                multipart field "file"; answers {"model", "top", "timeline",
                                "duration", "pictures"}

Every failure is a 4xx or 5xx status with JSON {"error": "..."} naming the problem: 400 a
request without audio, 404 an unknown path or model, 413 a file over --max-mb or --max-seconds,
415 a file that is not audio, 503 a model busy past --wait seconds.  Uploads are written to a
temporary folder and removed when their answer is sent.
"""
import email.parser
import email.policy
import json
import mimetypes
import os
import shutil
import sys
import tempfile
import threading
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from dsp import AudioError

from .analysis import analyse

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")


class HttpError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class Limits:
    def __init__(self, max_seconds=600.0, max_mb=50.0, wait=60.0):
        self.max_seconds, self.max_mb, self.wait = max_seconds, max_mb, wait
        self.max_bytes = int(max_mb * 2 ** 20)


def make_server(shelf, host="127.0.0.1", port=8000, limits=None, quiet=False):
    """A threading HTTP server for ``shelf`` (serve_forever() runs it; port 0 picks a free
    one, server.server_address says which)."""
    limits = limits or Limits()
    scratch = tempfile.mkdtemp(prefix="scratchnet-serve-")

    class Handler(RequestHandler):
        pass

    Handler.shelf, Handler.limits, Handler.scratch, Handler.quiet = shelf, limits, scratch, quiet
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.scratch = scratch
    close = server.server_close

    def server_close():  # the temporary folder goes with the server
        close()
        shutil.rmtree(scratch, ignore_errors=True)

    server.server_close = server_close
    return server


class RequestHandler(BaseHTTPRequestHandler):
    server_version = "scratchnet-serve"
    shelf = limits = scratch = None
    quiet = False

    # -- routes ------------------------------------------------------------------------------
    def do_GET(self):
        self.answer(self.get)

    def do_POST(self):
        self.answer(self.post)

    def get(self, url):
        if url.path in ("/", "/index.html"):
            return self.send_file(os.path.join(ASSETS, "index.html"))
        if url.path.startswith("/assets/"):
            name = url.path[len("/assets/"):]
            if "/" in name or name.startswith(".") or not os.path.isfile(
                    os.path.join(ASSETS, name)):
                raise HttpError(HTTPStatus.NOT_FOUND, f"no asset {name!r}")
            return self.send_file(os.path.join(ASSETS, name))
        if url.path == "/api/models":
            return self.send_json(HTTPStatus.OK, {
                "models": self.shelf.cards(),
                "limits": dict(max_seconds=self.limits.max_seconds,
                               max_mb=self.limits.max_mb)})
        raise HttpError(HTTPStatus.NOT_FOUND, f"no page {url.path!r}")

    def post(self, url):
        if url.path != "/api/classify":
            raise HttpError(HTTPStatus.NOT_FOUND, f"no API {url.path!r}; POST /api/classify")
        query = parse_qs(url.query)
        name = query.get("model", [None])[0]
        try:
            hop = float(query.get("hop", ["1.0"])[0])
        except ValueError:
            hop = -1.0
        if not 0.05 <= hop <= 60:
            raise HttpError(HTTPStatus.BAD_REQUEST, "hop must be a number of seconds in "
                                                    "[0.05, 60]")
        try:
            clf, lock = self.shelf.get(name)
        except KeyError as e:
            raise HttpError(HTTPStatus.NOT_FOUND, str(e.args[0]))
        folder = tempfile.mkdtemp(dir=self.scratch)
        try:
            path = self.receive_audio(folder)
            self.check_duration(path)
            if not lock.acquire(timeout=self.limits.wait):
                raise HttpError(HTTPStatus.SERVICE_UNAVAILABLE,
                                f"the model is busy with other uploads; try again in a moment "
                                f"(waited {self.limits.wait:g} s)")
            try:
                result = analyse(clf, path, hop)
            except (AudioError, ValueError) as e:
                raise HttpError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                                "not audio: " + str(e).replace(path, "the upload"))
            finally:
                lock.release()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self.send_json(HTTPStatus.OK, dict(result, model=name or self.shelf.default))

    # -- the upload --------------------------------------------------------------------------
    def receive_audio(self, folder):
        """The request's audio written to ``folder``; its path.  The size is checked before a
        byte is read."""
        length = self.headers.get("Content-Length")
        if length is None:
            raise HttpError(HTTPStatus.LENGTH_REQUIRED, "the upload needs a Content-Length")
        try:
            length = int(length)
        except ValueError:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {length!r}")
        if length > self.limits.max_bytes:
            self.close_connection = True  # the body is not read
            raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                            f"the file is {length / 2 ** 20:.3g} MB, over the limit of "
                            f"{self.limits.max_mb:g} MB")
        body = self.rfile.read(length)
        kind = self.headers.get("Content-Type", "")
        name = "upload"
        if kind.startswith("multipart/form-data"):
            body, name = multipart_file(kind, body)
        if not body:
            raise HttpError(HTTPStatus.BAD_REQUEST, "the file is empty (0 bytes)")
        suffix = os.path.splitext(name)[1] if os.path.splitext(name)[1] else ""
        path = os.path.join(folder, "upload" + "".join(c for c in suffix if c.isalnum() or
                                                       c == "."))
        with open(path, "wb") as f:
            f.write(body)
        return path

    def check_duration(self, path):
        try:
            import soundfile as sf
            seconds = sf.info(path).duration
        except Exception as e:  # soundfile's errors for what it cannot read
            raise HttpError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                            "not audio that soundfile reads (wav, flac, ogg, ...): "
                            + str(e).replace(path, "the upload"))
        if seconds > self.limits.max_seconds:
            raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                            f"the clip is {seconds:.0f} s long, over the limit of "
                            f"{self.limits.max_seconds:g} s")

    # -- answers -----------------------------------------------------------------------------
    def answer(self, route):
        try:
            route(urlparse(self.path))
        except HttpError as e:
            self.send_json(e.status, {"error": str(e)})
        except Exception as e:  # a bug: the server says so and stays up
            traceback.print_exc(file=sys.stderr)
            self.send_json(HTTPStatus.INTERNAL_SERVER_ERROR,
                           {"error": f"internal error ({type(e).__name__}: {e})"})

    def send_json(self, status, value):
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_file(self, path):
        with open(path, "rb") as f:
            data = f.read()
        kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", kind + ("; charset=utf-8" if kind.startswith("text/")
                                                 or kind.endswith("javascript") else ""))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        if not self.quiet:
            sys.stderr.write(f"{self.address_string()} {fmt % args}\n")


def multipart_file(content_type, body):
    """(bytes, file name) of the field "file" of a multipart/form-data body."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    if not message.is_multipart():
        raise HttpError(HTTPStatus.BAD_REQUEST, "a malformed multipart body")
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            return part.get_payload(decode=True) or b"", part.get_filename() or "upload"
    raise HttpError(HTTPStatus.BAD_REQUEST, 'the multipart body has no field "file"')


def serve_in_thread(shelf, limits=None, port=0):
    """A server on a free loopback port, running in a daemon thread (for tests and
    notebooks); returns it (server.server_address has the port; shutdown() stops it)."""
    server = make_server(shelf, "127.0.0.1", port, limits, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
