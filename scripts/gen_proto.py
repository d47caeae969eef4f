#!/usr/bin/env python3
"""Generate the gRPC Python code for proto/accserver.proto into imserver/cluster/pb/.

    .venv/bin/python scripts/gen_proto.py            # regenerate in place
    .venv/bin/python scripts/gen_proto.py --out DIR  # write elsewhere (the staleness test)

Needs grpcio-tools (in requirements.txt). The generated modules are committed, so a node
does not need protoc; tests/test_proto_generated.py fails when they are stale.
"""
import argparse
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO_DIR = os.path.join(ROOT, "proto")
OUT_DIR = os.path.join(ROOT, "imserver", "cluster", "pb")
PROTO = "accserver.proto"


def generate(out_dir: str) -> "list[str]":
    from grpc_tools import protoc
    import grpc_tools
    os.makedirs(out_dir, exist_ok=True)
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={out_dir}",
                      f"--grpc_python_out={out_dir}", os.path.join(PROTO_DIR, PROTO)])
    if rc != 0:
        raise SystemExit(f"protoc failed with {rc}")
    grpc_module = os.path.join(out_dir, "accserver_pb2_grpc.py")
    with open(grpc_module, encoding="utf-8") as fh:
        text = fh.read()
    # protoc writes a top-level import; the modules live in a package.
    text = re.sub(r"^import accserver_pb2 as", "from . import accserver_pb2 as", text, flags=re.M)
    with open(grpc_module, "w", encoding="utf-8") as fh:
        fh.write(text)
    return [os.path.join(out_dir, n) for n in ("accserver_pb2.py", "accserver_pb2_grpc.py")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=OUT_DIR)
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
