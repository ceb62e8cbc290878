"""Reading a state dict from disk, the one way every loader in hyvl does it.

Its own module so that the towers (local timm weights), the converters and the checkpoint
loader can all read weights without importing each other.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hyvl.errors import CheckpointError

# torch.save stores its zip entries uncompressed, so a checkpoint inflates to about its own size.
# A compressed one (a zip bomb: a few MB that inflate to GiBs) is refused before torch.load
# allocates what its entries declare. The slack allows a legitimately recompressed file.
MAX_INFLATION = 8
INFLATION_SLACK = 16 * 2**20


def check_inflated_size(path: Path) -> None:
    """Refuse a zip-format torch file whose entries inflate far beyond its size on disk."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return  # the legacy (pre-1.6) format: a plain pickle stream, nothing inflates
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({err})") from err
    size = path.stat().st_size
    if declared > MAX_INFLATION * size + INFLATION_SLACK:
        raise CheckpointError(
            f"{path}: refused: its zip entries inflate to {declared / 2**20:.0f} MiB from "
            f"{size / 2**20:.1f} MiB on disk ({declared / max(size, 1):.0f}x; a torch checkpoint "
            "is stored uncompressed): a compressed archive or a zip bomb, not read"
        )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file or a weights-only torch pickle (never unsafe unpickling)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises its own SafetensorError
            raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    check_inflated_size(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path}: cannot be read as a weights-only torch checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); hyvl never unpickles arbitrary "
            "objects. Re-save the state dict with torch.save(model.state_dict(), ...) or as "
            "safetensors."
        ) from err
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: holds no state dict of tensors")
    return obj
