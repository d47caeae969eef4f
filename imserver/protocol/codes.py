"""Reply codes of the wire protocol and their fixed messages (PROTOCOL.md, "Codes")."""
from enum import Enum, IntEnum


class Code(IntEnum):
    OK = 200
    NOT_LOGGED_IN = 1000
    PARAMETER_ILLEGAL = 1001
    UNAUTHORIZED_USER_ID = 1002
    UNAUTHORIZED = 1003
    SERVER_ERROR = 1004
    NOT_DATA = 1005
    MODEL_ADD_ERROR = 1006
    MODEL_DELETE_ERROR = 1007
    MODEL_STORE_ERROR = 1008
    OPERATION_FAILURE = 1009
    ROUTING_NOT_EXIST = 1010
    NODE_UNREACHABLE = 1100
    RATE_LIMITED = 1101
    NODE_STOPPING = 1102

    @property
    def message(self) -> str:
        return _MESSAGES[self]


_MESSAGES = {
    Code.OK: "Success",
    Code.NOT_LOGGED_IN: "未登录",
    Code.PARAMETER_ILLEGAL: "参数不合法",
    Code.UNAUTHORIZED_USER_ID: "非法的用户ID",
    Code.UNAUTHORIZED: "未授权",
    Code.SERVER_ERROR: "系统错误",
    Code.NOT_DATA: "没有数据",
    Code.MODEL_ADD_ERROR: "添加错误",
    Code.MODEL_DELETE_ERROR: "删除错误",
    Code.MODEL_STORE_ERROR: "存储错误",
    Code.OPERATION_FAILURE: "操作失败",
    Code.ROUTING_NOT_EXIST: "路由不存在",
    Code.NODE_UNREACHABLE: "节点不可达",
    Code.RATE_LIMITED: "请求过于频繁",
    Code.NODE_STOPPING: "节点正在关闭",
}


class CloseCode(IntEnum):
    """WebSocket close codes the node sends (RFC 6455 section 7.4; 4000-4999 are the
    application's own)."""

    NORMAL = 1000  # answer to a client's close without a usable code
    GOING_AWAY = 1001  # the node is shutting down: reconnect elsewhere
    PROTOCOL_ERROR = 1002  # the client broke the framing rules
    INVALID_PAYLOAD = 1007  # a text frame that is not UTF-8
    POLICY_VIOLATION = 1008  # kept sending over the rate limit
    MESSAGE_TOO_BIG = 1009  # a message over app.maxFrameBytes
    REPLACED = 4000  # the same user logged in on another connection
    HEARTBEAT_TIMEOUT = 4001  # no heartbeat for app.heartbeatTimeout


class Disconnect(Enum):
    """Why the node ends a connection with a close frame: the one place that maps a failure
    to its close code, the reason sent with it and the ``imserver_drops`` label (None: not
    counted as a drop)."""

    SHUTDOWN = (CloseCode.GOING_AWAY, "server going away", None)
    PROTOCOL_ERROR = (CloseCode.PROTOCOL_ERROR, "protocol error", "protocol_error")
    INVALID_UTF8 = (CloseCode.INVALID_PAYLOAD, "text frame is not valid UTF-8", "invalid_utf8")
    RATE_LIMITED = (CloseCode.POLICY_VIOLATION, "rate limit exceeded", "rate_limit")
    MESSAGE_TOO_BIG = (CloseCode.MESSAGE_TOO_BIG, "message too big", "message_too_big")
    REPLACED = (CloseCode.REPLACED, "logged in elsewhere", "replaced")
    HEARTBEAT_TIMEOUT = (CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout", "heartbeat_timeout")

    def __init__(self, code: CloseCode, reason: str, drop: "str | None"):
        self.code = code
        self.reason = reason
        self.drop = drop
