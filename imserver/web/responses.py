"""JSON answers, CORS and request parameters shared by the HTTP blueprints."""
import json

from flask import Response, request

from ..protocol import Code

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

JSON_TYPE = "application/json; charset=utf-8"


def json_answer(code: Code = Code.OK, data=None, detail: str = "", status: int = 200) -> Response:
    """``{"code":..,"msg":..,"data":..}`` (plus ``detail``, saying what to fix, on errors).
    HTTP 200, as the original API: the outcome is in ``code``; ``status`` is for the few
    answers a proxy or an HTTP client must understand on its own (401, 413, 503)."""
    body = {"code": int(code), "msg": code.message, "data": data}
    if detail:
        body["detail"] = detail
    return Response(_dumps(body), status=status, content_type=JSON_TYPE)


class ApiError(Exception):
    """An error answer, raised from wherever a request finds it (parameters, body, state)."""

    def __init__(self, code: Code, detail: str, status: int = 200, close: bool = False):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status
        self.close = close  # end the connection after the answer

    def answer(self) -> Response:
        response = json_answer(self.code, None, self.detail, self.status)
        if self.close:
            response.headers["Connection"] = "close"
        return response


def add_cors(response: Response) -> Response:
    response.headers["Access-Control-Allow-Origin"] = "*"
    if request.method == "OPTIONS":
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = request.headers.get(
            "Access-Control-Request-Headers", "Content-Type, X-API-Key, Authorization")
        response.headers["Access-Control-Max-Age"] = "86400"
        response.status_code = 204
        response.set_data(b"")
    return response


def params() -> dict:
    """Query string, form body and JSON object body merged (later wins), keys folded
    to lower case: ``appID``, ``appId`` and ``appid`` are one parameter."""
    merged = {k.lower(): v for k, v in request.args.items()}
    merged.update((k.lower(), v) for k, v in request.form.items())
    if request.is_json:
        try:
            body = request.get_json(silent=True)
        except RecursionError:
            raise ApiError(Code.PARAMETER_ILLEGAL, "the JSON body is nested too deeply") from None
        if isinstance(body, dict):
            merged.update((str(k).lower(), v) for k, v in body.items())
    return merged


def truthy(value) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")
