"""The coordinator and its client workers talk JSON, one object a line."""
import json


def encode(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def messages(readline):
    """Each object read with ``readline`` until the end of the stream; None stands for a
    line that is not JSON, and blank lines are passed over."""
    while True:
        line = readline()
        if not line:
            return
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except ValueError:
            yield None
