"""RFC 6455 framing (imserver.protocol.frames): exact header bytes, close frames, unmasking."""
import random
import struct

import pytest

from imserver.protocol import Disconnect, frames
from imserver.protocol.frames import (OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, FrameError,
                                      close_frame, encode_frame, parse_close, text_frame, unmask)


def reference_unmask(payload: bytes, mask: bytes) -> bytes:
    """RFC 6455 section 5.3, literally: octet i XOR mask octet i MOD 4."""
    return bytes(payload[i] ^ mask[i % 4] for i in range(len(payload)))


# -- encode_frame ------------------------------------------------------------------------------

def test_opcode_values():
    assert (frames.OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG) == (
        0x0, 0x1, 0x2, 0x8, 0x9, 0xA)


def test_encode_frame_empty():
    assert encode_frame(OP_TEXT, b"") == b"\x81\x00"


def test_encode_frame_short_text():
    assert encode_frame(OP_TEXT, b"hello") == b"\x81\x05hello"


def test_encode_frame_125_uses_7_bit_length():
    payload = bytes(range(125))
    frame = encode_frame(OP_TEXT, payload)
    assert frame[:2] == b"\x81\x7d"
    assert frame[2:] == payload
    assert len(frame) == 127


def test_encode_frame_126_uses_16_bit_length():
    payload = b"a" * 126
    frame = encode_frame(OP_TEXT, payload)
    assert frame[:4] == b"\x81\x7e\x00\x7e"
    assert frame[4:] == payload
    assert len(frame) == 130


def test_encode_frame_65535_uses_16_bit_length():
    payload = b"b" * 65535
    frame = encode_frame(OP_BINARY, payload)
    assert frame[:4] == b"\x82\x7e\xff\xff"
    assert frame[4:] == payload
    assert len(frame) == 65539


def test_encode_frame_65536_uses_64_bit_length():
    payload = b"c" * 65536
    frame = encode_frame(OP_TEXT, payload)
    assert frame[:10] == b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"
    assert frame[10:] == payload
    assert len(frame) == 65546


@pytest.mark.parametrize("opcode,first", [(OP_TEXT, 0x81), (OP_BINARY, 0x82), (OP_CLOSE, 0x88),
                                          (OP_PING, 0x89), (OP_PONG, 0x8A)])
def test_encode_frame_first_byte_is_fin_plus_opcode(opcode, first):
    assert encode_frame(opcode, b"x")[:2] == bytes((first, 1))


def test_server_frames_are_never_masked():
    for n in (0, 1, 125, 126, 65535, 65536):
        assert encode_frame(OP_TEXT, b"\x00" * n)[1] & 0x80 == 0


def test_text_frame_is_an_opcode_1_frame():
    assert text_frame(b'{"a":1}') == b'\x81\x07{"a":1}'


# -- close frames --------------------------------------------------------------------------------

def test_close_frame_code_and_reason():
    assert close_frame(1000, "bye") == b"\x88\x05\x03\xe8bye"


def test_close_frame_without_reason():
    assert close_frame(4001) == b"\x88\x02\x0f\xa1"


def test_close_frame_application_code():
    assert close_frame(4000, "logged in elsewhere") == (
        b"\x88\x15" + struct.pack("!H", 4000) + b"logged in elsewhere")


def test_close_frame_reason_capped_at_123_bytes():
    frame = close_frame(1008, "x" * 200)
    assert frame[:4] == b"\x88\x7d\x03\xf0"  # 125-byte payload: still a 7-bit length
    assert frame[4:] == b"x" * 123
    assert len(frame) == 2 + 125


def test_close_frame_reason_of_exactly_123_bytes_is_kept():
    assert close_frame(1000, "r" * 123) == b"\x88\x7d\x03\xe8" + b"r" * 123


def test_close_frame_non_ascii_reason_is_utf8():
    assert close_frame(1000, "再见") == b"\x88\x08\x03\xe8" + "再见".encode("utf-8")


@pytest.mark.parametrize("reason", ["é" * 70, "x" + "é" * 70, "哈" * 50, "x" + "哈" * 50,
                                    "xx" + "哈" * 50, "\U0001F600" * 40],
                         ids=["2byte", "2byte-odd", "3byte", "3byte+1", "3byte+2", "4byte"])
def test_close_frame_cap_does_not_split_a_character(reason):
    # RFC 6455 5.5.1: the reason is UTF-8; a client must fail a connection whose close
    # reason is not valid UTF-8, so the cap must fall on a character boundary.
    frame = close_frame(1000, reason)
    body = frame[4:]
    assert frame[1] == len(frame) - 2 <= 125
    assert len(body) <= 123
    text = body.decode("utf-8")  # raises if a character was cut
    assert reason.startswith(text)
    assert len(body) > 123 - 4  # at most one character (<= 4 bytes) dropped


def test_parse_close_code_and_reason():
    assert parse_close(b"\x03\xe8bye") == (1000, "bye")


def test_parse_close_code_only():
    assert parse_close(b"\x0f\xa0") == (4000, "")


def test_parse_close_empty_is_1005():
    assert parse_close(b"") == (1005, "")


def test_parse_close_one_byte_is_1005():
    assert parse_close(b"\x03") == (1005, "")


def test_parse_close_utf8_reason():
    assert parse_close(b"\x03\xe9" + "再见".encode()) == (1001, "再见")


def test_parse_close_invalid_utf8_reason_is_replaced():
    assert parse_close(b"\x03\xe8a\xffb") == (1000, "a\ufffdb")


def test_close_frame_round_trip():
    frame = close_frame(4002, "slow consumer")
    assert parse_close(frame[2:]) == (4002, "slow consumer")


# -- unmask --------------------------------------------------------------------------------------

def test_unmask_known_vector_from_rfc():
    # RFC 6455 section 5.7: a masked "Hello".
    assert unmask(b"\x7f\x9f\x4d\x51\x58", b"\x37\xfa\x21\x3d") == b"Hello"


def test_unmask_empty():
    assert unmask(b"", b"\x01\x02\x03\x04") == b""


def test_unmask_zero_mask_is_identity():
    data = bytes(range(256)) * 3
    assert unmask(data, b"\x00\x00\x00\x00") == data


@pytest.mark.parametrize("n", range(0, 71))
def test_unmask_matches_reference_for_small_lengths(n):
    rnd = random.Random(1000 + n)
    for _ in range(20):
        payload = bytes(rnd.getrandbits(8) for _ in range(n))
        mask = bytes(rnd.getrandbits(8) for _ in range(4))
        assert unmask(payload, mask) == reference_unmask(payload, mask)


@pytest.mark.parametrize("n", [65535, 65536, 65537])
def test_unmask_matches_reference_for_64k(n):
    rnd = random.Random(n)
    payload = rnd.randbytes(n)
    mask = rnd.randbytes(4)
    out = unmask(payload, mask)
    assert len(out) == n
    assert out == reference_unmask(payload, mask)


def test_unmask_keeps_leading_and_trailing_zero_bytes():
    # Big-integer arithmetic must not drop zero bytes at either end.
    mask = b"\xaa\xbb\xcc\xdd"
    payload = reference_unmask(b"\x00\x00abc\x00\x00", mask)
    assert unmask(payload, mask) == b"\x00\x00abc\x00\x00"
    assert unmask(b"\x00" * 9, b"\x00\x00\x00\x00") == b"\x00" * 9


def test_unmask_is_its_own_inverse():
    rnd = random.Random(7)
    payload, mask = rnd.randbytes(1001), rnd.randbytes(4)
    assert unmask(unmask(payload, mask), mask) == payload


def test_unmask_returns_bytes():
    assert type(unmask(b"abcd", b"\x01\x01\x01\x01")) is bytes


# -- FrameError ------------------------------------------------------------------------------------

def test_frame_error_carries_close_code_and_reason():
    err = FrameError(Disconnect.MESSAGE_TOO_BIG, "message larger than 65536 bytes")
    assert (err.close_code, err.reason, str(err)) == (1009, "message larger than 65536 bytes",
                                                      "message larger than 65536 bytes")
