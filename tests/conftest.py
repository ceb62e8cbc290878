"""Helpers shared by the test files: tiny JPEGs and webdataset shards written by the tests."""

import io
import tarfile

from PIL import Image


def jpeg(size=(64, 48), colour=(200, 10, 10)) -> bytes:
    """A plain ``size`` (w, h) JPEG of one colour, as bytes."""
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG")
    return buf.getvalue()


def write_tar(path, samples):
    """Write a webdataset shard at ``path`` from ``samples``, a list of ``(key, {ext: bytes})``;
    returns ``path``."""
    with tarfile.open(path, "w") as tar:
        for key, files in samples:
            for ext, data in files.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path
