"""What runs inside img2dataset for `curation download`: its child process, and the policy its workers keep.

img2dataset fetches with `urllib.urlopen(url, timeout=t)`, where `t` bounds each socket read, so a server
that trickles a byte a second holds a URL for as long as it likes; it opens any scheme urllib knows
(`file://` reads local files); and it decodes with OpenCV whatever size the header announces. So the child
replaces, in img2dataset's own namespace and in each of its worker processes:

* `img2dataset.downloader.download_image` by `fetch_image`: the URL checked first (`clipformats.urls`),
  redirects checked the same way, and `timeout` a deadline for the whole URL (a timer shuts the socket);
* its `Resizer` by `LimitedResizer`: the header's width x height checked against the pixel limit before
  OpenCV decodes anything (OpenCV's own limit is set to the same number as well);
* its `Downloader` by `PolicedDownloader`, which installs the two above in each worker and makes the worker
  die with its parent.

The wrappers are plain classes (img2dataset's workers are spawned, so what they run must be importable by
name); img2dataset is imported only inside the child.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import importlib
import io
import os
import signal
import socket
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from clipformats.images import ImageTooLarge, open_image
from clipformats.urls import url_problem
from curation.engines.processes import die_with_parent
from curation.stages.download.faces import FaceDetector

USER_AGENT = "Mozilla/5.0 (compatible; curation-download)"


@dataclass(frozen=True)
class FetchPolicy:
    schemes: frozenset[str]
    max_image_pixels: int
    workers_are_children: bool = True
    """img2dataset's multiprocessing workers are children of its process; pyspark's and Ray's are not (they
    must not take the img2dataset process for their parent)."""
    blur_faces: bool = False
    """Detect faces (`faces.FaceDetector`) in every image and blur them with img2dataset's blurrer before storing."""
    faces_folder: str | None = None
    """Where the workers note the images in which they found faces (`faces.FACES_FOLDER`)."""
    heartbeat: str | None = None
    """A file whose modification time a worker renews as it starts a shard and as each URL ends (the download's
    stall watch reads it; a URL that hangs renews nothing)."""


def beat(policy: FetchPolicy) -> None:
    if policy.heartbeat is not None:
        with contextlib.suppress(OSError), open(policy.heartbeat, "a"):  # no beat: the watch sees none
            os.utime(policy.heartbeat)


class _Deadline:
    """Shuts every socket of one URL when its time is up, whatever the socket is waiting for."""

    def __init__(self, seconds: float):
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


class _Watched:
    """A connection whose socket the deadline watches from the moment it is connected."""

    def __init__(self, *args: Any, deadline: _Deadline, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    def connect(self) -> None:
        super().connect()
        self._deadline.watch(self.sock)


class _WatchedHTTP(_Watched, http.client.HTTPConnection):
    pass


class _WatchedHTTPS(_Watched, http.client.HTTPSConnection):
    pass


def _opener(deadline: _Deadline, schemes: frozenset[str]) -> urllib.request.OpenerDirector:
    class HTTP(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> Any:
            return self.do_open(functools.partial(_WatchedHTTP, deadline=deadline), req)

    class HTTPS(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> Any:
            return self.do_open(functools.partial(_WatchedHTTPS, deadline=deadline), req, context=self._context)

    class Redirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 (urllib's signature)
            if (problem := url_problem(newurl, schemes)) is not None:
                raise urllib.error.HTTPError(newurl, code, f"redirect refused: {problem}", headers, fp)
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    return urllib.request.build_opener(HTTP, HTTPS, Redirects)


def fetch_image(row: tuple[int, str], timeout: float, user_agent_token: str | None,
                disallowed_header_directives: Any, *, policy: FetchPolicy) -> tuple[int, io.BytesIO | None, str | None]:
    """img2dataset's `download_image` contract: (key, bytes stream or None, error message or None)."""
    try:
        return _fetch(row, timeout, user_agent_token, disallowed_header_directives, policy)
    finally:
        beat(policy)


def _fetch(row: tuple[int, str], timeout: float, user_agent_token: str | None, disallowed_header_directives: Any,
           policy: FetchPolicy) -> tuple[int, io.BytesIO | None, str | None]:
    key, url = row
    if (problem := url_problem(url, policy.schemes)) is not None:
        return key, None, f"URL refused: {problem}"
    agent = USER_AGENT + (f" ({user_agent_token})" if user_agent_token else "")
    deadline = _Deadline(timeout)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": agent})
        with _opener(deadline, policy.schemes).open(request, timeout=timeout) as response:
            if disallowed_header_directives:
                from img2dataset.downloader import is_disallowed  # only here: img2dataset imports for seconds

                if is_disallowed(response.headers, user_agent_token, disallowed_header_directives):
                    return key, None, "Use of image disallowed by X-Robots-Tag directive"
            body = response.read()
        if deadline.expired:  # a body cut short by the deadline may look complete
            return key, None, f"timed out (deadline of {timeout:g} s per URL)"
        return key, io.BytesIO(body), None
    except Exception as error:  # noqa: BLE001 - every failure is a counted reason, as in img2dataset
        if deadline.expired:
            return key, None, f"timed out (deadline of {timeout:g} s per URL)"
        return key, None, str(error)
    finally:
        deadline.cancel()


class LimitedResizer:
    """img2dataset's resizer, behind a header check against the pixel limit; with `faces`, the faces it finds are
    added to the boxes img2dataset blurs (the inner resizer must then have a blurrer)."""

    def __init__(self, inner: Any, max_image_pixels: int, faces: Any = None, faces_folder: str | None = None):
        self.inner, self.max_image_pixels, self.faces = inner, max_image_pixels, faces
        self.faces_folder = faces_folder

    def __call__(self, img_stream: io.BytesIO, blurring_bbox_list: Any = None) -> tuple:
        try:
            open_image(img_stream.getvalue(), self.max_image_pixels)  # a copy: PIL may close what it reads
        except ImageTooLarge as error:
            return None, None, None, None, None, str(error)
        except Exception:  # noqa: BLE001 - a header PIL cannot read: OpenCV decides (and names the error)
            pass
        if self.faces is not None:
            found = self.faces.boxes_in(img_stream.getvalue())
            self.faces.note(self.faces_folder, img_stream.getvalue(), len(found))
            blurring_bbox_list = [*(blurring_bbox_list or []), *found] if found else blurring_bbox_list
        img_stream.seek(0)
        return self.inner(img_stream, blurring_bbox_list)


class PolicedDownloader:
    """img2dataset's downloader; in each worker it first installs the policy and ties the worker's life to
    the img2dataset process."""

    def __init__(self, inner: Any, policy: FetchPolicy):
        self.inner, self.policy, self.parent_pid = inner, policy, os.getpid()

    def __call__(self, row: Any) -> Any:
        if self.policy.workers_are_children and os.getpid() != self.parent_pid:
            die_with_parent(self.parent_pid, kernel=False)  # pool workers: see die_with_parent
        install(self.policy)
        beat(self.policy)
        return self.inner(row)


def install(policy: FetchPolicy) -> None:
    """Replace img2dataset's fetch function in this process (idempotent)."""
    import img2dataset.downloader

    img2dataset.downloader.download_image = functools.partial(fetch_image, policy=policy)


def _kill_own_group(signum: int, frame: object) -> None:
    os.killpg(os.getpgid(0), signal.SIGKILL)  # img2dataset, its workers and its logger: none keeps writing


class ReaderFrom:
    """img2dataset's Reader, numbering its shards from `first_shard` (a retry round's shards follow the
    download's; img2dataset's `extend` mode would renumber a resumed round's shards)."""

    def __init__(self, inner: Any, first_shard: int):
        self.inner, self.first_shard = inner, first_shard

    def __call__(self, *args: Any) -> Any:
        return self.inner(*args[:-1], self.first_shard)  # the last positional argument is start_shard_id


def resizer_with_faces(resizer: Any, arguments: dict[str, Any], policy: FetchPolicy) -> tuple[Any]:
    """img2dataset's resizer, given a blurrer when faces are blurred (img2dataset makes one only for bbox_col)."""
    if policy.blur_faces and arguments.get("blurrer") is None:
        from img2dataset.blurrer import BoundingBoxBlurrer

        arguments = {**arguments, "blurrer": BoundingBoxBlurrer()}
    return (resizer(**arguments),)


def child_main(arguments: dict[str, Any], log_file: str, policy: FetchPolicy, parent_pid: int,
               first_shard: int = 0) -> None:
    """The img2dataset child: its own process group, gone with its parent, quiet, offline-safe."""
    os.setpgid(0, 0)
    signal.signal(signal.SIGTERM, _kill_own_group)
    die_with_parent(parent_pid, signal.SIGTERM)  # SIGTERM, so the handler takes the whole group along
    os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"  # albumentations otherwise checks for updates online
    os.environ["WANDB_MODE"] = "disabled"
    os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(policy.max_image_pixels)  # inherited by the workers
    log = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    # the package's `main` attribute is its CLI function, which hides the module of the same name
    main = importlib.import_module("img2dataset.main")
    install(policy)
    resizer, downloader = main.Resizer, main.Downloader
    main.Resizer = lambda **kw: LimitedResizer(*resizer_with_faces(resizer, kw, policy), policy.max_image_pixels,
                                               FaceDetector() if policy.blur_faces else None, policy.faces_folder)
    main.Downloader = lambda **kw: PolicedDownloader(downloader(**kw), policy)
    if first_shard:
        main.Reader = ReaderFrom(main.Reader, first_shard)
    main.download(**arguments)
