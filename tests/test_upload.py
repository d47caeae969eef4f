"""Image uploads on real nodes (docs/PROTOCOL.md, "Uploads"): POST /upload stores an image of
a type found from its first bytes under a name of the server's, GET /files/<id> serves it back
as that type only; sizes, missing parts, ids that reach out of the directory, the API key and
login tokens, and a disk that refuses the write."""
import errno
import io
import json
import os
import re
import resource
import struct
import zlib
from unittest import mock

import pytest

from support import unique_id
from test_auth import API_KEY, NEW, UNKNOWN, mint
from test_http_abuse import RawHttp, chunk, head

JSON_TYPE = "application/json; charset=utf-8"
URL = re.compile(r"/files/([A-Za-z0-9_-]{24})\.(png|jpg|gif|webp)")
FILE_HEADERS = {"X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'",
                "Cache-Control": "public, max-age=31536000, immutable"}
ACCEPTED = ("image/png", "image/jpeg", "image/gif", "image/webp")
EVERY_BYTE = bytes(range(256))


def png_bytes() -> bytes:
    """A real 1x1 PNG, then every byte value (after IEND, which viewers ignore)."""
    def block(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + block(b"IHDR", header)
            + block(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + block(b"IEND", b"")
            + EVERY_BYTE)


IMAGES = {
    "png": (png_bytes(), "image/png", "png"),
    "jpeg": (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
             + EVERY_BYTE + b"\xff\xd9", "image/jpeg", "jpg"),
    "gif87a": (b"GIF87a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff,\x00\x00\x00\x00"
               b"\x01\x00\x01\x00\x00\x02\x02D\x01\x00;" + EVERY_BYTE, "image/gif", "gif"),
    "gif89a": (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00"
               b"\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
               + EVERY_BYTE, "image/gif", "gif"),
    "webp": (b"RIFF" + struct.pack("<I", 4 + 8 + len(EVERY_BYTE)) + b"WEBPVP8L"
             + EVERY_BYTE, "image/webp", "webp"),
}
PNG = IMAGES["png"][0]


def multipart(parts) -> "tuple[bytes, str]":
    """(body, Content-Type) of a multipart/form-data body of ``parts``: (name, file name or
    None for a plain field, Content-Type or None, data)."""
    boundary = "imserver-test-" + os.urandom(8).hex()
    body = b""
    for name, filename, ctype, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if ctype:
            body += f"Content-Type: {ctype}\r\n".encode()
        body += b"\r\n" + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def post_file(proc, data, filename="picture.png", ctype="image/png", name="file", headers=None):
    """(status, headers, answer as a dict) of an upload of ``data`` as the part ``name``."""
    body, content_type = multipart([(name, filename, ctype, data)])
    status, got, raw = proc.request("POST", "/upload", body=body,
                                    headers={"Content-Type": content_type, **(headers or {})})
    assert got["Content-Type"] == JSON_TYPE, raw[:300]
    assert got["Access-Control-Allow-Origin"] == "*"
    answer = json.loads(raw)
    assert list(answer)[:3] == ["code", "msg", "data"], answer
    return status, got, answer


def uploaded(proc, data, **kw) -> str:
    """The url of a stored upload (HTTP 200, code 200)."""
    status, _, answer = post_file(proc, data, **kw)
    assert status == 200, answer
    assert answer["code"] == 200 and answer["msg"] == "Success" and "detail" not in answer, answer
    assert list(answer["data"]) == ["url"]
    assert URL.fullmatch(answer["data"]["url"]), answer
    return answer["data"]["url"]


def refused(status, answer, code=1001, http_status=200) -> str:
    assert status == http_status, answer
    assert answer["code"] == code and answer["data"] is None and answer["detail"], answer
    return answer["detail"]


def stored(directory) -> "list[str]":
    """Every entry of the upload directory (hidden ones too), [] when it does not exist."""
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


@pytest.fixture
def upload_node(make_node, tmp_path):
    """``start(app=..., auth=...)``: a node whose uploads go to a directory of this test,
    returned with it."""
    def start(app=None, auth=None):
        directory = str(tmp_path / unique_id("uploads"))
        config = {"app": {"uploadDir": directory, **(app or {})}}
        if auth:
            config["auth"] = auth
        return make_node(config), directory
    return start


# -- accepted types ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(IMAGES))
def test_each_image_type_is_stored_and_served_back_as_it_is(upload_node, kind):
    proc, directory = upload_node()
    data, ctype, ext = IMAGES[kind]
    # neither the client's name nor its Content-Type counts: the first bytes do
    url = uploaded(proc, data, filename="holiday photo.txt", ctype="application/octet-stream")
    file_id = url.rsplit("/", 1)[1]
    assert file_id.endswith("." + ext)

    status, headers, body = proc.request("GET", url)
    assert status == 200
    assert body == data
    assert headers["Content-Type"] == ctype
    for name, value in FILE_HEADERS.items():
        assert headers[name] == value, name
    assert int(headers["Content-Length"]) == len(data)

    # stored under the server's name, the client's nowhere, nothing else left beside it
    assert stored(directory) == [file_id]
    with open(os.path.join(directory, file_id), "rb") as fh:
        assert fh.read() == data

    status, headers, body = proc.request("HEAD", url)
    assert (status, body, headers["Content-Type"]) == (200, b"", ctype)


def test_every_upload_gets_a_new_name(upload_node):
    proc, directory = upload_node()
    urls = {uploaded(proc, PNG, filename="same.png") for _ in range(3)}
    assert len(urls) == 3
    assert stored(directory) == sorted(url.rsplit("/", 1)[1] for url in urls)
    assert "same.png" not in stored(directory)


def test_an_upload_over_the_body_bound_of_other_routes_is_taken(upload_node):
    """app.maxBodyBytes (1 MiB) bounds every route but /upload, which takes up to
    app.maxUploadBytes (5 MiB) plus the multipart headers: by Content-Length or chunked."""
    proc, directory = upload_node()
    data = PNG + os.urandom(5 * (1 << 20) - len(PNG))  # exactly app.maxUploadBytes
    status, _, body = proc.request("GET", uploaded(proc, data))
    assert (status, body == data) == (200, True)

    big = PNG + os.urandom(2 << 20)
    body, ctype = multipart([("file", "big.png", "image/png", big)])
    conn = RawHttp(proc.http_port)
    try:
        conn.send(head("POST", "/upload", {"Content-Type": ctype, "Transfer-Encoding": "chunked"})
                  + b"".join(chunk(body[i:i + 65536]) for i in range(0, len(body), 65536))
                  + b"0\r\n\r\n")
        status, _, raw = conn.response()
    finally:
        conn.close()
    assert status == 200, raw[:300]
    url = json.loads(raw)["data"]["url"]
    assert proc.request("GET", url)[2] == big
    assert len(stored(directory)) == 2

    # the other routes keep app.maxBodyBytes
    status, headers, raw = proc.request("POST", "/user/list", body=body, headers={
        "Content-Type": ctype})
    assert status == 413
    assert "app.maxBodyBytes (1048576 bytes)" in json.loads(raw)["detail"]


# -- refused files ------------------------------------------------------------------------------

def test_html_named_png_is_refused(upload_node):
    proc, directory = upload_node()
    html = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"
    for ctype in ("image/png", "text/html"):
        status, _, answer = post_file(proc, html, filename="cat.png", ctype=ctype)
        detail = refused(status, answer)
        assert all(name in detail for name in ACCEPTED), detail
    assert stored(directory) == []


@pytest.mark.parametrize("data", [b"just some text\n", b"PNG\r\n but not one", b"GIF88a....",
                                  b"RIFF\x10\x00\x00\x00WAVEfmt ", b"\xff\xd8", b"%PDF-1.7\n"],
                         ids=["text", "png-ish", "gif88a", "riff-wave", "short-jpeg", "pdf"])
def test_a_file_that_is_not_an_accepted_image_is_refused(upload_node, data):
    proc, directory = upload_node()
    status, _, answer = post_file(proc, data, filename="notes.txt", ctype="text/plain")
    detail = refused(status, answer)
    assert all(name in detail for name in ACCEPTED), detail
    assert stored(directory) == []


def test_a_file_over_max_upload_bytes_is_413_and_not_kept(upload_node):
    proc, directory = upload_node(app={"maxUploadBytes": 2048})
    exactly = PNG + b"x" * (2048 - len(PNG))
    assert proc.request("GET", uploaded(proc, exactly))[2] == exactly
    assert len(stored(directory)) == 1

    # a little over: the body is read (within the multipart allowance) and refused
    status, _, answer = post_file(proc, exactly + b"x")
    assert "app.maxUploadBytes (2048 bytes)" in refused(status, answer, 1001, 413)
    # far over: refused by its Content-Length before the body is read
    status, headers, answer = post_file(proc, PNG + b"x" * 100_000)
    assert "app.maxUploadBytes (2048 bytes" in refused(status, answer, 1001, 413)
    assert headers["Connection"] == "close"
    assert len(stored(directory)) == 1
    # and the node still serves
    assert proc.get("/system/state")["code"] == 200


def test_a_declared_length_over_the_upload_bound_is_refused_before_the_body(upload_node):
    proc, directory = upload_node()
    conn = RawHttp(proc.http_port)
    try:
        conn.send(head("POST", "/upload", {"Content-Type": "multipart/form-data; boundary=b",
                                            "Content-Length": 50 << 20}))
        status, headers, body = conn.response(timeout=5)
        assert status == 413
        assert "app.maxUploadBytes (5242880 bytes" in json.loads(body)["detail"]
        assert conn.closed_within(5)
    finally:
        conn.close()
    assert stored(directory) == []


def test_a_missing_or_empty_file_is_1001(upload_node):
    proc, directory = upload_node()
    # no file part: another part name, a plain field, a form or JSON body, no body at all
    bodies = [multipart([("image", "a.png", "image/png", PNG)]),
              multipart([("file", None, None, b"not a file")]),
              (b"file=abc", "application/x-www-form-urlencoded"),
              (b'{"file":"abc"}', "application/json"),
              (b"", "application/octet-stream")]
    for body, ctype in bodies:
        status, headers, raw = proc.request("POST", "/upload", body=body,
                                            headers={"Content-Type": ctype})
        assert "file" in refused(status, json.loads(raw)), ctype
    status, _, answer = post_file(proc, b"")
    assert "empty" in refused(status, answer)
    assert stored(directory) == []


# -- serving ------------------------------------------------------------------------------------

TRAVERSALS = [
    "..%2F..%2Fconfig%2Fapp.yaml", "..%2foutside.png", "%2e%2e%2foutside.png",
    "..%5Coutside.png", "..%252Foutside.png", "%2Fetc%2Fpasswd", "....%2F%2Foutside.png",
    "outside.png%00.png", "x/../../outside.png",
]


def test_ids_that_are_unknown_malformed_or_reach_out_are_404(upload_node):
    proc, directory = upload_node()
    url = uploaded(proc, PNG)
    file_id = url.rsplit("/", 1)[1]
    stem = file_id.rsplit(".", 1)[0]
    # a file next to the upload directory, which no id may reach
    with open(os.path.join(os.path.dirname(directory), "outside.png"), "wb") as fh:
        fh.write(PNG)
    unknown = [
        "A" * 24 + ".png",          # the pattern, but no such file
        stem + ".gif",              # the right stem with another type
        stem, stem + ".PNG", stem + ".html", stem + ".png.html", "." + file_id,
        f".{file_id}.part", file_id + "/", stem[:-1] + ".png", "outside.png", "",
    ]
    for path_id in TRAVERSALS + unknown:
        status, headers, body = proc.request("GET", "/files/" + path_id)
        assert status == 404, (path_id, status, body[:200])
        assert headers["Content-Type"] == JSON_TYPE, path_id
        answer = json.loads(body)
        assert answer["code"] == 1010 and answer["data"] is None, (path_id, answer)
        assert PNG not in body
    assert proc.request("GET", url)[0] == 200


def test_a_conditional_get_of_a_file_is_304(upload_node):
    proc, _ = upload_node()
    url = uploaded(proc, IMAGES["webp"][0])
    status, headers, _ = proc.request("GET", url)
    etag = headers["ETag"]
    status, headers, body = proc.request("GET", url, headers={"If-None-Match": etag})
    assert (status, body) == (304, b"")
    assert headers["Cache-Control"] == FILE_HEADERS["Cache-Control"]


# -- authorisation ------------------------------------------------------------------------------

def test_with_an_api_key_uploads_need_the_key_or_a_login_token(upload_node):
    proc, directory = upload_node(auth={"secret": NEW, "apiKey": API_KEY})
    for headers, why in (
            ({}, "X-API-Key"),
            ({"X-API-Key": API_KEY + "x"}, "X-API-Key"),
            ({"Authorization": "Bearer " + mint("alice", key=UNKNOWN)}, "signature"),
            ({"Authorization": "Bearer " + mint("alice", ttl=-3600)}, "expired"),
            ({"Authorization": "Bearer " + mint("alice", app_id=999)}, "appID"),
            ({"Authorization": "Bearer " + mint(None)}, "userID"),
            ({"Authorization": "Bearer not-a-token"}, "malformed"),
            ({"Authorization": "Basic " + API_KEY}, "X-API-Key")):
        status, _, answer = post_file(proc, PNG, headers=headers)
        assert why in refused(status, answer, 1003, 401), headers
    assert stored(directory) == []

    by_key = uploaded(proc, PNG, headers={"X-API-Key": API_KEY})
    by_token = uploaded(proc, PNG, headers={"Authorization": "Bearer " + mint("alice", 102)})
    assert len(stored(directory)) == 2

    # a token the chat page minted works as well
    status, _, body = proc.request("GET", "/home/token", params={"appID": 101, "name": "Bo"})
    token = json.loads(body)["data"]["token"]
    assert token
    uploaded(proc, PNG, headers={"Authorization": f"Bearer {token}"})

    # files are served without a key (an <img> sends none), preflights answer
    for url in (by_key, by_token):
        assert proc.request("GET", url)[:3:2] == (200, PNG)
    status, headers, _ = proc.request("OPTIONS", "/upload", headers={
        "Origin": "https://chat.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization"})
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in headers["Access-Control-Allow-Methods"]


def test_a_token_without_auth_secret_is_refused_when_the_key_is_set(upload_node):
    proc, directory = upload_node(auth={"apiKey": API_KEY})
    status, _, answer = post_file(proc, PNG, headers={"Authorization": "Bearer " + mint("bo")})
    assert "auth.secret" in refused(status, answer, 1003, 401)
    assert stored(directory) == []


def test_without_an_api_key_uploads_are_open(upload_node):
    proc, directory = upload_node(auth={"secret": NEW})
    uploaded(proc, PNG)
    assert len(stored(directory)) == 1


# -- the disk -----------------------------------------------------------------------------------

def test_the_upload_directory_is_made_when_missing(upload_node):
    proc, directory = upload_node()
    assert not os.path.exists(directory)
    url = uploaded(proc, PNG)
    assert stored(directory) == [url.rsplit("/", 1)[1]]


def test_a_write_that_fails_midway_is_1004_and_leaves_nothing(upload_node):
    """The worker may write files of 32 KiB at most (RLIMIT_FSIZE, as a full disk): the
    copy of a larger image fails part way, and its partial file is removed."""
    proc, directory = upload_node()
    small = uploaded(proc, PNG)
    for pid in proc.worker_pids():
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (32768, 32768))
    status, _, answer = post_file(proc, PNG + os.urandom(200_000))
    detail = refused(status, answer, 1004)
    assert "could not be stored" in detail and directory not in detail
    assert stored(directory) == [small.rsplit("/", 1)[1]]
    assert proc.request("GET", small)[2] == PNG
    uploaded(proc, PNG)  # a file under the limit is still stored


def test_a_directory_that_cannot_be_made_is_1004(upload_node, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"a file where a directory should be")
    proc, _ = upload_node(app={"uploadDir": str(blocker / "uploads")})
    status, _, answer = post_file(proc, PNG)
    detail = refused(status, answer, 1004)
    assert "could not be stored" in detail and str(tmp_path) not in detail
    assert blocker.read_bytes() == b"a file where a directory should be"
    assert proc.get("/system/state")["code"] == 200


class FailingSource(io.BytesIO):
    """A file that gives its bytes, then fails as a broken disk does."""

    def read(self, n=-1):
        data = super().read(n)
        if not data:
            raise OSError(errno.EIO, "Input/output error")
        return data


def fail(*args, **kw):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["read", "fsync", "rename"])
def test_store_leaves_no_partial_file(tmp_path, where):
    """A failure after part of the file is written (a source that breaks after two chunks,
    a sync or a rename that fails) leaves no file, partial or whole."""
    from imserver.web import uploads
    directory = str(tmp_path / "up")
    data = PNG * 1000  # more than one chunk of the copy
    with pytest.raises(OSError):
        if where == "read":
            uploads.store(FailingSource(data), directory, "png")
        else:
            with mock.patch.object(uploads.os, where, fail):
                uploads.store(io.BytesIO(data), directory, "png")
    assert os.path.isdir(directory)
    assert stored(directory) == []


def test_store_writes_the_whole_file_under_a_new_id(tmp_path):
    from imserver.web import uploads
    directory = str(tmp_path / "up")
    data = PNG + os.urandom(300_000)
    file_id = uploads.store(io.BytesIO(data), directory, "png")
    assert URL.fullmatch("/files/" + file_id) and file_id.endswith(".png")
    assert stored(directory) == [file_id]
    with open(os.path.join(directory, file_id), "rb") as fh:
        assert fh.read() == data
