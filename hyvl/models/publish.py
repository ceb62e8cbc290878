"""Publishing: a folder ready for the Hugging Face Hub (``hyvl export hub``) and ``push_to_hub``."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hyvl.errors import CheckpointError
from hyvl.models.checkpoint import load_model, save


def prepare_folder(checkpoint: str | Path, out: str | Path, repo_id: str | None = None) -> Path:
    """A folder ready for upload: the export of ``checkpoint`` and its model card, in ``out``.

    ``checkpoint``: an export or a training output directory (its eval.jsonl and config.yaml go
    into the card), or a MERU / HyCoCLIP ``.pth`` (converted to safetensors).
    """
    checkpoint, out = Path(checkpoint), Path(out)
    model = load_model(checkpoint)
    run_dir = checkpoint if (checkpoint / "export").is_dir() else None
    if out.exists() and any(out.iterdir()):
        raise CheckpointError(f"{out}: exists and is not empty; choose a new folder")
    save(model, out, run_dir=run_dir, repo_id=repo_id)
    return out


def push_to_hub(
    path_or_model,
    repo_id: str,
    private: bool | None = None,
    commit_message: str = "Upload hyvl model",
    token: str | None = None,
):
    """Upload a model (or an export / training output directory / .pth) to ``repo_id``.

    Creates the repository if needed and uploads model.safetensors, config.json and README.md
    (the model card). Returns huggingface_hub's ``CommitInfo``.
    """
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "upload"
        if isinstance(path_or_model, (str, Path)):
            prepare_folder(path_or_model, folder, repo_id)
        else:
            model = getattr(path_or_model, "module", path_or_model)
            save(model, folder, repo_id=repo_id)
        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)
