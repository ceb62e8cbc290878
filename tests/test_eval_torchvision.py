"""Zero-shot on a torchvision dataset already on disk (`torchvision:NAME:ROOT[:SPLIT]`): the
evaluation split by default, never a download, clear errors. The data set is a tiny MNIST written
in its raw idx format by the test."""

import struct

import pytest
import torch

import hyvl
from hyvl.errors import DataError
from hyvl.evaluation.zeroshot import evaluate_zeroshot


def _write_idx(raw, prefix: str, n: int, label: int) -> None:
    images = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=torch.Generator())
    (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
        struct.pack(">iiii", 2051, n, 28, 28) + images.numpy().tobytes()
    )
    (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
        struct.pack(">ii", 2049, n) + bytes([label] * n)
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tv")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _write_idx(raw, "train", 3, label=1)
    _write_idx(raw, "t10k", 5, label=7)
    torch.manual_seed(0)
    hyvl.save(hyvl.create_model("meru_tiny"), root / "model")
    return root, hyvl.load(root / "model")


def test_default_is_the_test_split_and_classnames_come_from_the_dataset(setup):
    root, (model, preprocess, tokenizer) = setup
    res = evaluate_zeroshot(
        model,
        preprocess,
        tokenizer,
        f"torchvision:MNIST:{root}",
        templates="simple",
        return_predictions=True,
    )
    assert res["num_samples"] == 5 and res["num_classes"] == 10
    assert res["_labels"].tolist() == [7] * 5  # the t10k files, not the training split
    assert res["_classnames"][7] == "7 - seven"
    train = evaluate_zeroshot(
        model, preprocess, tokenizer, f"torchvision:MNIST:{root}:train", templates="simple"
    )
    assert train["num_samples"] == 3


def test_missing_or_misnamed_datasets_fail_clearly(setup, tmp_path):
    root, (model, preprocess, tokenizer) = setup
    with pytest.raises(DataError, match="never downloads"):
        evaluate_zeroshot(model, preprocess, tokenizer, f"torchvision:MNIST:{tmp_path}")
    with pytest.raises(DataError, match="no dataset 'NoSuchSet'"):
        evaluate_zeroshot(model, preprocess, tokenizer, f"torchvision:NoSuchSet:{root}")
    with pytest.raises(DataError, match="only the splits"):
        evaluate_zeroshot(model, preprocess, tokenizer, f"torchvision:MNIST:{root}:val")
    with pytest.raises(DataError, match="NAME:ROOT"):
        evaluate_zeroshot(model, preprocess, tokenizer, "torchvision:MNIST")


def test_image_files_are_decoded_by_hyvl_skipping_damaged_ones(setup, tmp_path):
    """DTD reads image files: a truncated one is skipped and counted (torchvision's default
    loader would raise mid-run), a 16-bit one is scaled, not clipped to white."""
    import io

    import numpy as np
    from PIL import Image

    from hyvl.evaluation.discover import file_samples

    _, (model, preprocess, tokenizer) = setup
    data = tmp_path / "dtd" / "dtd"
    for c in ("banded", "woven"):
        (data / "images" / c).mkdir(parents=True)
    Image.new("RGB", (12, 12), (200, 10, 10)).save(data / "images" / "banded" / "a.jpg")
    buf = io.BytesIO()
    Image.new("RGB", (12, 12), (10, 10, 200)).save(buf, format="jpeg")
    (data / "images" / "woven" / "b.jpg").write_bytes(buf.getvalue()[:60])
    grey = np.full((12, 12), 40000, dtype=np.uint16)
    Image.fromarray(grey).save(data / "images" / "woven" / "c.png")
    (data / "labels").mkdir()
    (data / "labels" / "test1.txt").write_text("banded/a.jpg\nwoven/b.jpg\nwoven/c.png\n")
    res = evaluate_zeroshot(
        model, preprocess, tokenizer, f"torchvision:DTD:{tmp_path}", return_predictions=True
    )
    assert res["skipped"] == {"corrupt_image": 1} and res["num_samples"] == 2
    assert res["_labels"].tolist() == [0, 1] and res["_classnames"] == ["banded", "woven"]
    from hyvl.evaluation.zeroshot import _torchvision_dataset

    image, label = _torchvision_dataset(f"torchvision:DTD:{tmp_path}", preprocess)[2]
    assert label == 1 and torch.equal(image, preprocess(Image.new("L", (12, 12), 155)))

    class Pixels:  # FER2013 keeps (pixel tensor, label) pairs: not files, left to torchvision
        _samples = [(torch.zeros(48, 48), 0)]

    assert file_samples(Pixels()) is None
