"""The committed stubs in prefrank/proto must be exactly what scripts/generate_protos.py makes from protos/."""

from __future__ import annotations

import pathlib
import subprocess
import sys

from conftest import REPO

COMMITTED = REPO / "prefrank" / "proto"


def _stub_files(root: pathlib.Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted((root / "prefrank").rglob("*"))
        if path.is_file() and path.suffix in (".py", ".pyi")
    }


def test_stubs_match_generated_from_proto(tmp_path: pathlib.Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "generate_protos.py"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert completed.returncode == 0, completed.stderr

    generated = _stub_files(tmp_path)
    committed = _stub_files(COMMITTED)
    assert sorted(generated) == sorted(committed), "run `make protos`: the stub file list differs"
    for name, content in generated.items():
        assert content == committed[name], f"prefrank/proto/{name} is stale; run `make protos`"
