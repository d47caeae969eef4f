"""JSON answers, CORS and request parameters shared by the HTTP blueprints."""
import json

from flask import Response, request

from ..protocol import Code

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

JSON_TYPE = "application/json; charset=utf-8"


def json_answer(code: Code = Code.OK, data=None, detail: str = "") -> Response:
    """``{"code":..,"msg":..,"data":..}`` (plus ``detail``, saying what to fix, on errors).
    Always HTTP 200, as the original API: the outcome is in ``code``."""
    body = {"code": int(code), "msg": code.message, "data": data}
    if detail:
        body["detail"] = detail
    return Response(_dumps(body), status=200, content_type=JSON_TYPE)


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
        body = request.get_json(silent=True)
        if isinstance(body, dict):
            merged.update((str(k).lower(), v) for k, v in body.items())
    return merged


def truthy(value) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")
