"""Image uploads (PROTOCOL.md, "Uploads"): ``POST /upload`` stores one image under
``app.uploadDir`` with a name of the server's, ``GET /files/<id>`` serves it back.

The type is what the file's first bytes say, never its name or the client's Content-Type,
and a stored file is only ever served as that image type, with headers that keep a browser
from reading it as anything else (docs/SECURITY.md)."""
import errno
import logging
import os
import re
import secrets
from typing import IO, Optional

from flask import Blueprint, Flask, current_app, request, send_file

from ..protocol import Code
from . import api, bodies
from .responses import ApiError, add_cors, json_answer

log = logging.getLogger("imserver.uploads")

bp = Blueprint("uploads", __name__)
bp.after_request(add_cors)

UPLOAD_ENDPOINT = "uploads.upload"
# What a multipart body adds around its file: the boundary lines and the part's headers
# (Content-Disposition with the client's file name, Content-Type).
MULTIPART_OVERHEAD = 16384
COPY_CHUNK = 65536
SNIFF_BYTES = 12

# detected type -> (Content-Type, extension of the stored file)
TYPES = {
    "png": ("image/png", "png"),
    "jpeg": ("image/jpeg", "jpg"),
    "gif": ("image/gif", "gif"),
    "webp": ("image/webp", "webp"),
}
_TYPE_OF_EXTENSION = {ext: ctype for ctype, ext in TYPES.values()}
ACCEPTED = ", ".join(ctype for ctype, _ in TYPES.values())

# A file id: 24 URL-safe characters (144 random bits) and the extension of its type.
# Nothing else reaches the file system: no dot of a path, no slash, no hidden file.
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{24}\.(?:png|jpg|gif|webp)")
PART_SUFFIX = ".part"  # a file being written; never matches ID_PATTERN

FILE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'",
    "Cache-Control": "public, max-age=31536000, immutable",
}


def init_app(app: Flask, cfg: dict) -> None:
    """Let ``POST /upload`` bodies (and no other route's) reach app.maxUploadBytes plus the
    multipart headers; bodies.py refuses larger ones before reading them."""
    limit = cfg["app.maxUploadBytes"]
    bodies.allow_larger(
        app, UPLOAD_ENDPOINT, limit + MULTIPART_OVERHEAD,
        f"the upload is larger than app.maxUploadBytes ({limit} bytes, plus "
        f"{MULTIPART_OVERHEAD} bytes for the multipart headers), or its multipart form has "
        f"more than {app.config['MAX_FORM_PARTS']} parts")


def detect_type(head: bytes) -> Optional[str]:
    """The image type (a key of TYPES) that the file's first bytes show, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if len(head) >= 12 and head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    return None


def new_file_id(kind: str) -> str:
    return f"{secrets.token_urlsafe(18)}.{TYPES[kind][1]}"


def store(source: IO[bytes], directory: str, kind: str) -> str:
    """Copy ``source`` (from its current position) into ``directory`` (made when missing)
    under a new id, which is returned. The copy is written under a temporary name and renamed
    once complete, so that a file id never names a partial file; on an OSError nothing is
    left behind and the error is raised."""
    file_id = new_file_id(kind)
    final = os.path.join(directory, file_id)
    partial = os.path.join(directory, f".{file_id}{PART_SUFFIX}")
    os.makedirs(directory, exist_ok=True)
    try:
        with open(partial, "xb") as out:
            while chunk := source.read(COPY_CHUNK):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.rename(partial, final)
    except BaseException:
        try:
            os.unlink(partial)
        except OSError:
            pass
        raise
    return file_id


def _settings() -> "tuple[str, int]":
    cfg = current_app.config["IMSERVER"]
    return os.path.abspath(cfg["app.uploadDir"]), cfg["app.maxUploadBytes"]


# -- authorisation -------------------------------------------------------------------------

# The key or a login token, as the push API (``api.preflight_and_key``, PUSH_ROUTES).
bp.before_request(api.preflight_and_key)


# -- routes --------------------------------------------------------------------------------

@bp.route("/upload", methods=["POST", "OPTIONS"])
def upload():
    directory, limit = _settings()
    part = request.files.get("file")
    if part is None:
        raise ApiError(Code.PARAMETER_ILLEGAL, "send the image as the part named file of a "
                       "multipart/form-data body, with a file name")
    source = part.stream
    source.seek(0, os.SEEK_END)
    size = source.tell()
    source.seek(0)
    if size == 0:
        raise ApiError(Code.PARAMETER_ILLEGAL, "the file is empty")
    if size > limit:
        raise ApiError(Code.PARAMETER_ILLEGAL, f"the file is larger than app.maxUploadBytes "
                       f"({limit} bytes)", status=413)
    kind = detect_type(source.read(SNIFF_BYTES))
    if kind is None:
        raise ApiError(Code.PARAMETER_ILLEGAL, f"the file must be an image of one of the types "
                       f"{ACCEPTED}; its content is none of them")
    source.seek(0)
    try:
        file_id = store(source, directory, kind)
    except OSError as exc:
        log.error("upload not stored in %s: %s", directory, exc)
        reason = exc.strerror or errno.errorcode.get(exc.errno or 0) or type(exc).__name__
        raise ApiError(Code.SERVER_ERROR, f"the file could not be stored ({reason}); "
                       "nothing was kept") from None
    log.info("upload stored: %s, %d bytes", file_id, size)
    return json_answer(data={"url": f"/files/{file_id}"})


@bp.route("/files/<path:file_id>", methods=["GET", "OPTIONS"])
def serve(file_id: str):
    if not ID_PATTERN.fullmatch(file_id):
        raise _no_such_file()
    directory, _ = _settings()
    path = os.path.join(directory, file_id)
    try:
        response = send_file(path, mimetype=_TYPE_OF_EXTENSION[file_id.rsplit(".", 1)[1]],
                             conditional=True, etag=True, max_age=None)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise _no_such_file() from None
    response.headers.update(FILE_HEADERS)
    return response


def _no_such_file() -> ApiError:
    return ApiError(Code.ROUTING_NOT_EXIST, "there is no file with this id", status=404)
