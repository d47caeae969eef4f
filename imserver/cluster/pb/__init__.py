"""Generated from proto/accserver.proto by scripts/gen_proto.py; do not edit."""
