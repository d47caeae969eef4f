"""Reply codes of the wire protocol and their fixed messages (PROTOCOL.md, "Codes")."""
from enum import IntEnum


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
}


class CloseCode(IntEnum):
    """WebSocket close codes (RFC 6455 section 7.4) used by the node."""

    NORMAL = 1000
    GOING_AWAY = 1001  # node shutting down
    PROTOCOL_ERROR = 1002
    INVALID_PAYLOAD = 1007  # text frame that is not UTF-8
    POLICY_VIOLATION = 1008  # replaced by a newer login, idle timeout, slow consumer
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
