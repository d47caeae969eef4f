"""The room's members: each logs in, joins the room and records every message of the room
it gets (join-reply publications and live pushes) by msgID and offset. A member that the
drain closes (1001) comes back on the other node after a random pause, logs in and joins
with ``since`` = the last epoch/offset it saw; the reply says whether it was recovered."""
import json
import random
import time
from collections import Counter

import gevent

from ..drivers import AccDriver
from ..wsclient import ClosedError, WSError

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_loads = json.loads


class JoinError(WSError):
    pass


class Member:
    """One client. ``got`` counts each msgID of the room received (a count above 1 is a
    duplicate); ``offsets`` lists the offsets in the order received."""

    __slots__ = ("index", "user", "node", "conn", "epoch", "last", "first_top", "got",
                 "offsets", "t_closed", "close_code", "t_back", "t_recovered", "recovered",
                 "recovered_count", "tries", "failures", "state", "epochs", "greenlet")

    def __init__(self, index: int, user: str, node: str):
        self.index = index
        self.user = user
        self.node = node  # "A" or "B": where it is (or is going)
        self.conn = None
        self.epoch = None  # the room's epoch as last seen
        self.last = 0  # the highest offset of the room seen (the join reply's top included)
        self.first_top = None  # the top its first join answered: it expects what follows
        self.got = Counter()  # msgID -> times received
        self.offsets = []
        self.t_closed = None  # the drain's close frame (or the end of the connection)
        self.close_code = None
        self.t_back = None  # logged in again on the other node
        self.t_recovered = None  # the recovery join's reply
        self.recovered = None  # that reply's "recovered"
        self.recovered_count = 0  # publications in it
        self.tries = 0
        self.failures = Counter()
        self.state = "new"
        self.epochs = set()
        self.greenlet = None

    def take(self, data: dict) -> None:
        """A message of the room (a publication or a live push's data)."""
        msg_id = data.get("msgID") or ""
        self.got[msg_id] += 1
        offset = data.get("offset")
        if isinstance(offset, int):
            self.offsets.append(offset)
            if offset > self.last:
                self.last = offset
        epoch = data.get("epoch")
        if epoch:
            self.epochs.add(epoch)
            self.epoch = epoch


class RoomDriver(AccDriver):
    """The acc driver with ``join``: room messages go to the member of the connection;
    everything else is only counted (presence and app-room frames are skipped unparsed:
    at 1,000 members they are most of the frames)."""

    def __init__(self, ws_url: str, room: str, members_by_conn, **kw):
        super().__init__(ws_url, **kw)
        self.room = room
        self.by_conn = members_by_conn  # WSConnection -> Member
        self.frames = Counter()

    def on_message(self, conn, opcode, payload, now):
        if b'"cmd":"msg"' not in payload:
            self.frames["other"] += 1
            return
        try:
            frame = _loads(payload)
            data = frame["response"]["data"]
        except (ValueError, KeyError, TypeError):
            self.frames["bad"] += 1
            return
        if data.get("room") != self.room:
            self.frames["other room"] += 1
            return
        self.frames["room msg"] += 1
        member = self.by_conn.get(conn)
        if member is not None:
            member.take(data)

    def join(self, conn, member: Member, since=None) -> dict:
        """Send ``join`` (with ``since``) and read until its reply; room messages before it
        are taken as live ones. The reply's data; JoinError when it is not 200."""
        data = {"room": self.room}
        if since is not None:
            data["since"] = since
        conn.send_text(_dumps({"seq": "j", "cmd": "join", "data": data}))
        deadline = time.monotonic() + self.timeout
        while True:
            _, payload = conn.recv_message()
            if b'"cmd":"join"' in payload:
                frame = _loads(payload)
                response = frame.get("response") or {}
                if response.get("code") != 200:
                    raise JoinError(f"join code {response.get('code')}",
                                    str(response.get("detail", "")))
                return response.get("data") or {}
            self.on_message(conn, 1, payload, self.clock())
            if time.monotonic() > deadline:
                raise JoinError("join timeout")


def first_join(driver: RoomDriver, member: Member, source_ip: str, tries: int = 3) -> bool:
    """Connect, log in and join (no ``since``); the member's serve loop is left to the
    caller. False after ``tries`` failures."""
    for attempt in range(tries):
        member.tries += 1
        try:
            conn = driver.connect(member.user, source_ip)
            driver.by_conn[conn] = member
            reply = driver.join(conn, member)
        except WSError as exc:
            member.failures["first " + exc.reason] += 1
            gevent.sleep(0.2 * (attempt + 1))
            continue
        member.conn = conn
        member.epoch = reply.get("epoch")
        member.first_top = member.last = int(reply.get("offset") or 0)
        member.state = "joined"
        return True
    member.state = "failed"
    return False


def come_back(driver: RoomDriver, member: Member, source_ip: str, spread: float,
              tries: int, backoff: float, rng: random.Random, stop_at: float) -> None:
    """After the drain closed it: wait up to ``spread`` s, then log in on the other node
    and join with ``since``, ``tries`` times at most with a growing pause; then serve."""
    gevent.sleep(rng.uniform(0, spread))
    for attempt in range(tries):
        if time.time() > stop_at:
            member.failures["out of time"] += 1
            break
        member.tries += 1
        conn = None
        try:
            conn = driver.connect(member.user, source_ip)
            driver.by_conn[conn] = member
            member.t_back = time.time()
            since = {"epoch": member.epoch or "", "offset": member.last}
            reply = driver.join(conn, member, since)
        except WSError as exc:
            member.failures[exc.reason] += 1
            if conn is not None:
                conn.abort()
            gevent.sleep(min(4.0, backoff * (2 ** attempt)) * rng.uniform(0.5, 1.5))
            continue
        member.t_recovered = time.time()
        member.recovered = bool(reply.get("recovered"))
        pubs = reply.get("publications") or []
        member.recovered_count = len(pubs)
        for data in pubs:
            member.take(data)
        top = reply.get("offset")
        if member.recovered and isinstance(top, int) and top > member.last:
            member.last = top
        if reply.get("epoch"):
            member.epoch = reply["epoch"]
        member.conn = conn
        member.node = "B"
        member.state = "recovered" if member.recovered else "not recovered"
        reason = driver.serve(conn)
        if member.state in ("recovered", "not recovered") and not conn.initiated:
            member.failures["dropped after recovery: " + reason] += 1
        return
    member.state = "gave up"


def serve_until_closed(driver: RoomDriver, member: Member) -> "tuple[float, int | None]":
    """The reader loop of a member on the drained node: (time it ended, close code)."""
    conn = member.conn
    try:
        conn.serve(driver.on_message, driver.clock)
    except ClosedError as exc:
        conn.abort()
        return time.time(), exc.code
    except WSError:
        conn.abort()
        return time.time(), None
    finally:
        conn.abort()
    return time.time(), None
