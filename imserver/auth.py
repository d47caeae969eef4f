"""Authentication, from the ``auth`` section of the config (docs/SECURITY.md).

- login tokens: ``serviceToken`` is a JWT signed HS256 with ``auth.secret``, claims
  ``userID``, ``appID`` and ``exp``;
- the push API key (``X-API-Key``, ``auth.apiKey``);
- the shared secret of node-to-node gRPC calls (``auth.rpcSecret``);
- the origins allowed to open a WebSocket (``auth.origins``).

Each secret may be a list, for rotation: the first one signs or is sent, any one is
accepted. Keys are compared in constant time. Reasons returned for a refusal are safe to
log: they never hold a secret or a token.
"""
import hmac
import time
from typing import Optional

import jwt

from .protocol.envelope import parse_app_id

ALGORITHM = "HS256"
LEEWAY = 30  # seconds of clock difference allowed between the token's minter and the node
RPC_SECRET_HEADER = "x-imserver-secret"


def _any_equal(presented, accepted: "tuple[bytes, ...]") -> bool:
    """``presented`` equals one of ``accepted``; compares with every one, in constant time."""
    if not isinstance(presented, str) or not presented:
        return False
    given = presented.encode("utf-8")
    found = False
    for key in accepted:
        found |= hmac.compare_digest(given, key)
    return found


class Auth:
    def __init__(self, cfg: dict):
        self.secrets = tuple(cfg.get("auth.secret", ()))
        self.token_ttl = cfg.get("auth.tokenTTL", 86400)
        self._api_keys = tuple(k.encode("utf-8") for k in cfg.get("auth.apiKey", ()))
        self.protect_lists = cfg.get("auth.protectLists", False)
        self.rpc_secrets = tuple(cfg.get("auth.rpcSecret", ()))
        self.origins = frozenset(cfg.get("auth.origins", ()))

    # -- login tokens --------------------------------------------------------------------

    @property
    def tokens_required(self) -> bool:
        return bool(self.secrets)

    def mint(self, app_id: int, user_id: str, ttl: Optional[int] = None) -> str:
        """A token for ``user_id`` in ``app_id``, valid ``ttl`` seconds (auth.tokenTTL);
        empty when no auth.secret is set."""
        if not self.secrets:
            return ""
        now = int(time.time())
        claims = {"userID": user_id, "appID": app_id, "iat": now,
                  "exp": now + (self.token_ttl if ttl is None else ttl)}
        return jwt.encode(claims, self.secrets[0], algorithm=ALGORITHM)

    def token_claims(self, token) -> "tuple[Optional[dict], str]":
        """(claims, "") of a valid token, or (None, reason)."""
        if not isinstance(token, str) or not token:
            return None, "no serviceToken"
        if not token.isascii():
            return None, "token is malformed"  # a JWT is ASCII (base64url and dots)
        for key in self.secrets:
            try:
                return jwt.decode(token, key, algorithms=[ALGORITHM], leeway=LEEWAY,
                                  options={"require": ["exp"]}), ""
            except jwt.InvalidSignatureError:
                continue  # perhaps signed with another key of the rotation
            except jwt.ExpiredSignatureError:
                return None, "token expired"
            except jwt.MissingRequiredClaimError:
                return None, "token has no exp claim"
            except jwt.InvalidAlgorithmError:
                return None, f"token is not signed with {ALGORITHM}"
            except jwt.DecodeError:
                return None, "token is malformed"
            except jwt.InvalidTokenError as exc:
                return None, f"token rejected ({type(exc).__name__})"
        return None, "token signature does not match auth.secret"

    def check_token(self, token, app_id: int, user_id: str) -> str:
        """"" when logins are open or ``token`` is valid for ``app_id``/``user_id``; else
        why not (no secret or token in it)."""
        if not self.secrets:
            return ""
        claims, reason = self.token_claims(token)
        if claims is None:
            return reason
        if "userID" not in claims or "appID" not in claims:
            return "token has no userID or appID claim"
        if claims.get("userID") != user_id:
            return "token is for another userID"
        if parse_app_id(claims.get("appID")) != app_id:
            return "token is for another appID"
        return ""

    # -- HTTP API ------------------------------------------------------------------------

    @property
    def api_key_required(self) -> bool:
        return bool(self._api_keys)

    def api_key_ok(self, presented) -> bool:
        return _any_equal(presented, self._api_keys)

    # -- node to node --------------------------------------------------------------------

    def rpc_metadata(self) -> "tuple[tuple[str, str], ...]":
        """Metadata every call to a peer carries."""
        return ((RPC_SECRET_HEADER, self.rpc_secrets[0]),) if self.rpc_secrets else ()

    # -- WebSocket upgrades --------------------------------------------------------------

    def origin_allowed(self, origin) -> bool:
        """Any origin when auth.origins is empty or holds "*"; else one of the list."""
        if not self.origins or "*" in self.origins:
            return True
        return isinstance(origin, str) and origin.strip().rstrip("/").lower() in self.origins

    # -- start-up ------------------------------------------------------------------------

    def warnings(self) -> "list[str]":
        """What is left open, one line each, for the start-up log."""
        lines = []
        if not self.secrets:
            lines.append("auth.secret is not set: logins are not authenticated (open demo "
                         "mode); set it to require a serviceToken (docs/SECURITY.md)")
        if not self._api_keys:
            lines.append("auth.apiKey is not set: anyone who reaches the HTTP port can push "
                         "messages with /user/sendMessage and /user/sendMessageAll")
        return lines


def rpc_secret_ok(presented, accepted: "tuple[str, ...]") -> bool:
    return _any_equal(presented, tuple(s.encode("utf-8") for s in accepted))
