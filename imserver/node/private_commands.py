"""WebSocket commands of private messages: ``send`` and ``ack`` (PROTOCOL.md, "Devices,
private messages and the inbox"); ``history`` with ``inbox`` lives with the rooms'."""
from ..cluster import StoreError
from ..protocol import Code
from .commands import CommandError, commands
from .room_commands import store_failed, user_fields, user_message, whole


@commands.register("send")
def send(sessions, conn, data):
    fields = user_fields(conn, data)
    to = fields.get("to")
    if not sessions.valid_user_id(to):
        raise CommandError(Code.PARAMETER_ILLEGAL, f"to must be a userID of 1 to "
                           f"{sessions.max_user_id} characters, without control characters")
    if to == conn.user_id:
        raise CommandError(Code.PARAMETER_ILLEGAL, "a private message goes to another user")
    delivery, history = sessions.delivery, sessions.history
    message, claim = user_message(sessions, conn, fields, target=to)
    if message is None:
        return Code.OK, {"msgID": claim, "duplicate": True}
    try:
        received = history.append(message.in_inbox(to))
        kept = history.append(message.in_inbox(conn.user_id))  # the sender's conversation
    except StoreError as exc:
        # Not answered as accepted: a retry stores it (again, at worst, for the receiver).
        delivery.release_msg_id(claim)
        raise store_failed(exc) from None
    try:
        delivered, _ = delivery.push_private(received)
        delivery.push_private(kept, skip=conn)  # the sender's other devices
    except StoreError:
        delivered = False  # stored: the receiver's devices get it at their next login
    return Code.OK, {"msgID": message.seq, "offset": kept.offset, "epoch": kept.epoch,
                     "delivered": delivered}


@commands.register("ack")
def ack(sessions, conn, data):
    fields = user_fields(conn, data)
    if not conn.device:
        raise CommandError(Code.PARAMETER_ILLEGAL, "ack is for a login with a deviceID")
    offset = whole(fields.get("offset"), "offset", 0)
    try:
        sessions.history.ack(conn.app_id, conn.user_id, conn.device, offset)
    except ValueError as exc:
        raise CommandError(Code.PARAMETER_ILLEGAL, str(exc)) from None
    except StoreError as exc:
        raise store_failed(exc) from None
    return Code.OK, None
