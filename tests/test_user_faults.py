"""What a new user meets first: typos, checks before the work, lost samples, mixed models,
checkpoints from elsewhere, file modes (each test is named after the case it reproduces;
docs/reliability.md lists them)."""

import os
import stat

import torch


def test_export_files_follow_the_umask_not_0600(tmp_path):
    """safetensors writes through a private temporary file (0600): a cluster group sharing the
    run could not read the export. Every atomic write ends with the umask's mode."""
    from safetensors.torch import save_file

    from hyvl.io import atomic_dir, write_text

    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "export") as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp / "model.safetensors"))
            (tmp / "sub").mkdir(mode=0o700)
        write_text(tmp_path / "results.json", "{}\n")
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "export" / "model.safetensors") == 0o644
    assert mode(tmp_path / "export" / "sub") == 0o755
    assert mode(tmp_path / "export") == 0o755
    assert mode(tmp_path / "results.json") == 0o644
