"""Wire protocol: codes, the JSON envelope, WebSocket framing and the message value.
Pure, no I/O."""
from .codes import CloseCode, Code, Disconnect
from .envelope import ProtocolError, Request, encode_push, encode_reply, fold_keys, parse_request
from .message import Message

__all__ = ["CloseCode", "Code", "Disconnect", "Message", "ProtocolError", "Request",
           "encode_push", "encode_reply", "fold_keys", "parse_request"]
