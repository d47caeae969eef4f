"""Wire protocol: codes, the JSON envelope and WebSocket framing. Pure, no I/O."""
from .codes import CloseCode, Code
from .envelope import ProtocolError, Request, encode_push, encode_reply, fold_keys, parse_request

__all__ = ["CloseCode", "Code", "ProtocolError", "Request", "encode_push", "encode_reply",
           "fold_keys", "parse_request"]
