"""The committed gRPC code must be what scripts/gen_proto.py makes of proto/accserver.proto."""
import os
import subprocess
import sys

from support import ROOT

GENERATED = os.path.join(ROOT, "imserver", "cluster", "pb")


def test_generated_code_is_current(tmp_path):
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_proto.py"),
                    "--out", str(tmp_path)], check=True, capture_output=True)
    for name in ("accserver_pb2.py", "accserver_pb2_grpc.py"):
        with open(os.path.join(GENERATED, name), encoding="utf-8") as fh:
            committed = fh.read()
        fresh = (tmp_path / name).read_text(encoding="utf-8")
        assert committed == fresh, (
            f"imserver/cluster/pb/{name} is stale: run `.venv/bin/python scripts/gen_proto.py` "
            "and commit the result")


def test_service_names_match_the_protocol():
    from imserver.cluster.pb import accserver_pb2 as pb
    service = pb.DESCRIPTOR.services_by_name["AccServer"]
    assert pb.DESCRIPTOR.package == "protobuf"
    assert [m.name for m in service.methods] == [
        "QueryUsersOnline", "SendMsg", "SendMsgAll", "GetUserList", "Publish", "RoomUsers"]
    fields = {m: [(f.name, f.number) for f in pb.DESCRIPTOR.message_types_by_name[m].fields]
              for m in ("SendMsgReq", "SendMsgAllReq", "GetUserListRsp", "QueryUsersOnlineRsp")}
    assert fields["SendMsgReq"] == [("seq", 1), ("appID", 2), ("userID", 3), ("cms", 4),
                                    ("type", 5), ("msg", 6), ("isLocal", 7), ("sender", 8)]
    assert fields["SendMsgAllReq"] == [("seq", 1), ("appID", 2), ("userID", 3), ("cms", 4),
                                       ("type", 5), ("msg", 6)]
    assert fields["GetUserListRsp"] == [("retCode", 1), ("errMsg", 2), ("userID", 3)]
    assert fields["QueryUsersOnlineRsp"] == [("retCode", 1), ("errMsg", 2), ("online", 3)]
    publish = [(f.name, f.number) for f in pb.DESCRIPTOR.message_types_by_name["PublishReq"].fields]
    assert publish == [("seq", 1), ("appID", 2), ("room", 3), ("cms", 4), ("type", 5), ("msg", 6),
                       ("sender", 7), ("target", 8), ("msgID", 9), ("offset", 10), ("epoch", 11),
                       ("time", 12)]
