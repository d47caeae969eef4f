"""Relay over gRPC: the ``AccServer`` service of PROTOCOL.md, client and server.

gRPC runs cooperatively under gevent once ``init_gevent()`` has run (after
monkey-patching, before any gRPC object exists): ``enable_gevent()`` does that. One
channel per peer is kept and reused; every call has a deadline; a broadcast or a
user-list query goes to all peers at once. With ``auth.rpcSecret`` set, every call
carries it in the metadata ``x-imserver-secret`` and the server refuses calls without it
(UNAUTHENTICATED).
"""
import logging
import time
from concurrent import futures

import gevent
import gevent.lock
import grpc

from ..auth import RPC_SECRET_HEADER, rpc_secret_ok
from ..metrics import GRPC_CALLS, GRPC_ERRORS
from ..protocol import Code, Message
from ..throttle import ThrottledLog
from .base import PeerService, Relay, RelayError
from .pb import accserver_pb2 as pb
from .pb import accserver_pb2_grpc as pb_grpc

log = logging.getLogger("imserver.relay")

_gevent_ready = False

CHANNEL_OPTIONS = [
    # A restarted peer is found again within seconds, not gRPC's default two minutes.
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
    ("grpc.enable_retries", 0),
    ("grpc.keepalive_time_ms", 30000),
    ("grpc.keepalive_timeout_ms", 5000),
]


# grpcio's gevent mode runs its blocking waits in gevent's thread pool, whose default of
# 10 threads stalls a node's gRPC (both ways) once about 9 calls are in flight. The pool
# gets room for every call a node may have open: outgoing ones are capped below it.
THREADPOOL_SIZE = 256
MAX_CALLS_IN_FLIGHT = 128

# A peer that lets this many calls in a row go unanswered (deadline passed, or unavailable)
# is suspect: calls to it fail at once, and one call every PROBE_EVERY seconds goes through
# as a probe; the first answer clears it. A frozen node must not cost every call a full
# deadline for as long as it stays frozen.
SUSPECT_AFTER = 3
PROBE_EVERY = 2.0
NO_ANSWER = ("DEADLINE_EXCEEDED", "UNAVAILABLE")
# A peer that answered UNIMPLEMENTED to this server's own methods is a node of the original;
# it is asked again after this many seconds, in case it was replaced by a node of ours.
ORIGINAL_RECHECK = 60.0


def enable_gevent() -> None:
    """Make grpcio cooperate with gevent; idempotent, and must precede any gRPC object."""
    global _gevent_ready
    if not _gevent_ready:
        from grpc.experimental import gevent as grpc_gevent
        grpc_gevent.init_gevent()
        gevent.get_hub().threadpool.maxsize = THREADPOOL_SIZE
        _gevent_ready = True


# -- messages to and from protobuf: the only place that knows both shapes ---------------------

# The original's client puts "msg" (or nothing) in ``type`` and its server pushes "text"
# whatever the field says: a message an original node relays is pushed as it would push it.
ORIGINAL_TYPES = ("", "msg")


def _pushed_type(relayed: str) -> str:
    return "text" if relayed in ORIGINAL_TYPES else relayed


def send_msg_request(user_id: str, message: Message) -> pb.SendMsgReq:
    return pb.SendMsgReq(seq=message.seq, appID=message.app_id, userID=user_id,
                         cms=message.cmd, type=message.type, msg=message.text,
                         sender=message.sender)


def send_msg_all_request(message: Message) -> pb.SendMsgAllReq:
    return pb.SendMsgAllReq(seq=message.seq, appID=message.app_id, userID=message.sender,
                            cms=message.cmd, type=message.type, msg=message.text)


def publish_request(message: Message) -> pb.PublishReq:
    return pb.PublishReq(seq=message.seq, appID=message.app_id, room=message.room,
                         cms=message.cmd, type=message.type, msg=message.text,
                         sender=message.sender, target=message.target, msgID=message.msg_id,
                         offset=message.offset, epoch=message.epoch,
                         time=int(message.time * 1000))


def published_message(request: pb.PublishReq) -> Message:
    return Message(request.appID, request.seq, request.cms or "msg", request.msg,
                   request.sender, request.type or "text", request.target, request.room,
                   request.msgID, request.time / 1000, request.offset, request.epoch)


def message_of(request) -> Message:
    """The message a peer's SendMsg or SendMsgAll carries (in SendMsgAll ``userID`` is the
    sender, in SendMsg the recipient and ``sender`` the sender)."""
    if isinstance(request, pb.SendMsgAllReq):
        sender = request.userID
    else:
        sender = request.sender
    return Message(request.appID, request.seq, request.cms or "msg", request.msg, sender,
                   _pushed_type(request.type))


class GrpcRelay(Relay):
    def __init__(self, timeout: float, metadata=(), clock=time.monotonic):
        self.timeout = timeout
        self._metadata = tuple(metadata)
        self._in_flight = gevent.lock.BoundedSemaphore(MAX_CALLS_IN_FLIGHT)
        self._stubs = {}
        self._clock = clock
        self._misses: "dict[str, int]" = {}  # peer -> calls in a row it did not answer
        self._probe_at: "dict[str, float]" = {}  # suspect peer -> when the next probe may go
        self._originals: "dict[str, float]" = {}  # node of the original -> until when

    def suspects(self) -> "list[str]":
        return sorted(p for p, n in self._misses.items() if n >= SUSPECT_AFTER)

    def _admit(self, peer: str, method: str) -> None:
        """Raise RelayError for a suspect peer, unless this call is its probe."""
        misses = self._misses.get(peer, 0)
        if misses < SUSPECT_AFTER:
            return
        now = self._clock()
        if now < self._probe_at.get(peer, 0.0):
            raise RelayError(peer, f"{peer} {method}: suspect, it did not answer its last "
                                   f"{misses} calls (probed every {PROBE_EVERY:.0f}s)")
        self._probe_at[peer] = now + PROBE_EVERY

    def _answered(self, peer: str, answered: bool) -> None:
        if answered:
            if self._misses.pop(peer, 0) >= SUSPECT_AFTER:
                log.info("peer %s answers again", peer)
            self._probe_at.pop(peer, None)
            return
        misses = self._misses[peer] = self._misses.get(peer, 0) + 1
        if misses >= SUSPECT_AFTER:
            self._probe_at[peer] = self._clock() + PROBE_EVERY
        if misses == SUSPECT_AFTER:
            log.warning("peer %s did not answer %d calls in a row: calls skip it, with a "
                        "probe every %.0fs", peer, misses, PROBE_EVERY)

    def _stub(self, peer: str) -> pb_grpc.AccServerStub:
        stub = self._stubs.get(peer)
        if stub is None:
            channel = grpc.insecure_channel(peer, options=CHANNEL_OPTIONS)
            stub = self._stubs[peer] = pb_grpc.AccServerStub(channel)
            stub.channel = channel
        return stub

    def _call(self, peer: str, method: str, request, timeout=None):
        GRPC_CALLS.labels(peer, method).inc()
        timeout = timeout or self.timeout
        self._admit(peer, method)
        try:
            # Waiting for a free slot counts against the call's deadline.
            if not self._in_flight.acquire(timeout=timeout):
                raise RelayError(peer, f"{peer} {method}: {MAX_CALLS_IN_FLIGHT} calls already "
                                       "in flight")
            try:
                answer = getattr(self._stub(peer), method)(request, timeout=timeout,
                                                           metadata=self._metadata)
            finally:
                self._in_flight.release()
            self._answered(peer, True)
            return answer
        except grpc.RpcError as exc:
            GRPC_ERRORS.labels(peer, method).inc()
            code = exc.code() if hasattr(exc, "code") else None
            self._answered(peer, code is not None and code.name not in NO_ANSWER)
            hint = (" (the peer refused this node's auth.rpcSecret: give every node the same one)"
                    if code == grpc.StatusCode.UNAUTHENTICATED else "")
            raise RelayError(peer, f"{peer} {method}: {code.name if code else exc}{hint}",
                             unreachable=code == grpc.StatusCode.UNAVAILABLE,
                             unimplemented=code == grpc.StatusCode.UNIMPLEMENTED) from None

    def query_online(self, peer, app_id, user_id) -> bool:
        rsp = self._call(peer, "QueryUsersOnline",
                         pb.QueryUsersOnlineReq(appID=app_id, userID=user_id))
        # ``online`` alone decides: an original node answers retCode 0 with online true (its
        # server writes the code into the request), and a node of ours never says true
        # with an error code.
        return rsp.online

    def send_to_user(self, peer, user_id, message) -> bool:
        rsp = self._call(peer, "SendMsg", send_msg_request(user_id, message))
        return rsp.retCode == Code.OK

    def _call_or_error(self, peer: str, method: str, request, timeout=None):
        # A greenlet that dies of an exception gets its traceback printed by gevent; a
        # failed call is an answer here, not a crash.
        try:
            return self._call(peer, method, request, timeout)
        except RelayError as exc:
            return exc

    def _fan_out(self, peers, method, request, timeout=None):
        timeout = timeout or self.timeout
        jobs = {peer: gevent.spawn(self._call_or_error, peer, method, request, timeout)
                for peer in peers}
        gevent.joinall(list(jobs.values()), timeout=timeout + 1)
        answers, failed = {}, []
        for peer, job in jobs.items():
            value = job.value if job.successful() else None
            if value is None or isinstance(value, RelayError):
                job.kill(block=False)
                failed.append(value or RelayError(peer, f"{peer} {method}: "
                                                        f"{job.exception or 'no answer'}"))
            else:
                answers[peer] = value
        return answers, failed

    def broadcast(self, peers, message, timeout=None):
        request = send_msg_all_request(message)
        answers, failed = self._fan_out(peers, "SendMsgAll", request, timeout)
        return failed + [RelayError(p, f"{p} SendMsgAll: retCode {rsp.retCode} {rsp.errMsg}")
                         for p, rsp in answers.items() if rsp.retCode != Code.OK]

    def user_lists(self, peers, app_id):
        answers, failed = self._fan_out(peers, "GetUserList", pb.GetUserListReq(appID=app_id))
        users = []
        for rsp in answers.values():
            users.extend(rsp.userID)
        return users, failed

    def _split(self, peers) -> "tuple[list[str], list[str]]":
        """(this server's nodes, nodes of the original) as last found out."""
        now = self._clock()
        ours, originals = [], []
        for peer in peers:
            (originals if self._originals.get(peer, 0.0) > now else ours).append(peer)
        return ours, originals

    def _note_originals(self, failed) -> "tuple[list[str], list[RelayError]]":
        """Take the UNIMPLEMENTED answers out of ``failed``: (those peers, other failures)."""
        originals = [exc.peer for exc in failed if exc.unimplemented]
        until = self._clock() + ORIGINAL_RECHECK
        for peer in originals:
            if peer not in self._originals:
                log.info("peer %s is a node of the original: rooms and stored messages reach "
                         "it as the original's calls", peer)
            self._originals[peer] = until
        return originals, [exc for exc in failed if not exc.unimplemented]

    def publish(self, peers, message, timeout=None):
        ours, originals = self._split(peers)
        members, failed = {}, []
        if ours:
            answers, failed = self._fan_out(ours, "Publish", publish_request(message), timeout)
            found, failed = self._note_originals(failed)
            originals += found
            failed += [RelayError(p, f"{p} Publish: retCode {rsp.retCode} {rsp.errMsg}")
                       for p, rsp in answers.items() if rsp.retCode != Code.OK]
            members = {p: rsp.members for p, rsp in answers.items() if rsp.retCode == Code.OK}
        if originals and not message.room:
            failed += self.broadcast(originals, message, timeout)
        return members, failed

    def room_users(self, peers, app_id, room):
        ours, _ = self._split(peers)
        answers, failed = self._fan_out(ours, "RoomUsers",
                                        pb.RoomUsersReq(appID=app_id, room=room))
        _, failed = self._note_originals(failed)  # an original node has no named rooms
        users = []
        for rsp in answers.values():
            users.extend(rsp.userID)
        return users, failed

    def forget(self, peer: str) -> None:
        self._originals.pop(peer, None)
        self._misses.pop(peer, None)
        self._probe_at.pop(peer, None)
        stub = self._stubs.pop(peer, None)
        if stub is not None:
            stub.channel.close()

    def close(self) -> None:
        for peer in list(self._stubs):
            self.forget(peer)


class AccServerServicer(pb_grpc.AccServerServicer):
    """Serves peers' calls through this node's PeerService."""

    def __init__(self, service: PeerService):
        self.service = service

    def QueryUsersOnline(self, request, context):
        online = self.service.is_local(request.appID, request.userID)
        return pb.QueryUsersOnlineRsp(retCode=Code.OK, online=online)

    def SendMsg(self, request, context):
        if self.service.deliver_to_user(request.userID, message_of(request)):
            return pb.SendMsgRsp(retCode=Code.OK, sendMsgID=request.seq)
        return pb.SendMsgRsp(retCode=Code.NOT_DATA, errMsg="user not on this node")

    def SendMsgAll(self, request, context):
        self.service.deliver_to_room(message_of(request))
        return pb.SendMsgAllRsp(retCode=Code.OK, sendMsgID=request.seq)

    def GetUserList(self, request, context):
        return pb.GetUserListRsp(retCode=Code.OK,
                                 userID=self.service.local_users(request.appID))

    def Publish(self, request, context):
        members = self.service.publish_here(published_message(request))
        return pb.PublishRsp(retCode=Code.OK, members=members)

    def RoomUsers(self, request, context):
        return pb.RoomUsersRsp(retCode=Code.OK, userID=self.service.local_room_users(
            request.appID, request.room))


class SecretInterceptor(grpc.ServerInterceptor):
    """Refuses, with UNAUTHENTICATED, every call whose metadata lacks one of ``secrets``."""

    def __init__(self, secrets):
        self.secrets = tuple(secrets)

        def refuse(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          f"missing or wrong {RPC_SECRET_HEADER} metadata (auth.rpcSecret)")

        self._refusal = grpc.unary_unary_rpc_method_handler(refuse)
        self._refused_log = ThrottledLog(
            log, logging.WARNING, "refused gRPC call %s: missing or wrong %s metadata "
                                  "(auth.rpcSecret)")

    def intercept_service(self, continuation, handler_call_details):
        presented = [v for k, v in handler_call_details.invocation_metadata or ()
                     if k == RPC_SECRET_HEADER]
        if len(presented) == 1 and rpc_secret_ok(presented[0], self.secrets):
            return continuation(handler_call_details)
        self._refused_log(handler_call_details.method, RPC_SECRET_HEADER)
        return self._refusal


def start_server(service: PeerService, host: str, port: int, max_workers: int = 64,
                 secrets=()) -> grpc.Server:
    """Serve AccServer on host:port, to callers that send one of ``secrets`` when any is
    given; raises RuntimeError when the port cannot be bound."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                         interceptors=[SecretInterceptor(secrets)] if secrets else None,
                         options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_AccServerServicer_to_server(AccServerServicer(service), server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise RuntimeError(f"cannot listen for gRPC on {host}:{port} (app.rpcPort in use?)")
    server.start()
    return server
