"""Generate the Python gRPC stubs in prefrank/proto from protos/prefrank/v1/*.proto."""

from __future__ import annotations

import argparse
import pathlib
import re
import sys

from grpc_tools import protoc

REPO = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "protos"
DEFAULT_OUT = REPO / "prefrank" / "proto"

# protoc writes imports relative to the proto root ("from prefrank.v1 import ..."). The stubs live
# inside the prefrank.proto package, so those imports are rewritten to absolute package paths.
_IMPORT = re.compile(r"^from prefrank\.v1 import ", re.MULTILINE)


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Generate stubs for every proto under protos/ into out_dir and return the written files."""
    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    well_known = pathlib.Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p.relative_to(PROTO_ROOT)) for p in protos),
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed for {', '.join(map(str, protos))}")

    written = sorted(p for p in (out_dir / "prefrank").rglob("*.py*") if p.suffix in (".py", ".pyi"))
    for path in written:
        path.write_text(_IMPORT.sub("from prefrank.proto.prefrank.v1 import ", path.read_text()))
    for package in (out_dir / "prefrank", out_dir / "prefrank" / "v1"):
        (package / "__init__.py").touch()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT, help="output directory")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path.relative_to(args.out))  # noqa: T201 - CLI output
    return 0


if __name__ == "__main__":
    sys.exit(main())
