import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from scarce.cil import Preprocess, load_cifar100, load_fashion_mnist_cil, load_imagenet_subset, run
from scarce.errors import DataError

from cil_helpers import tiny_config


def write_cifar100(root, per_class_train=2, per_class_test=1, classes=100):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "meta", "wb") as fh:
        pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)], "coarse_label_names": ["x"] * 20}, fh)
    for split, n in (("train", per_class_train), ("test", per_class_test)):
        labels = [c for c in range(classes) for _ in range(n)]
        data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        with open(root / split, "wb") as fh:
            pickle.dump({b"data": data, b"fine_labels": labels, b"filenames": [b"f"] * len(labels)}, fh)
    return root


def test_cifar100_pickle_layout(tmp_path):
    root = write_cifar100(tmp_path / "cifar-100-python")
    data = load_cifar100(tmp_path)  # the parent folder works too
    assert data.n_classes == 100 and data.class_names[3] == "class3"
    assert len(data.train) == 200 and len(data.test) == 100
    x = data.train.load(np.array([0, 5]))
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.uint8
    raw = pickle.load(open(root / "train", "rb"), encoding="bytes")[b"data"]
    assert (x[0].reshape(-1).numpy() == raw[0]).all()  # channel-first rows, as CIFAR stores them
    assert list(data.train.labels[:4]) == [0, 0, 1, 1]


def test_corrupt_cifar_pickle_is_a_data_error_naming_the_file(tmp_path):
    root = write_cifar100(tmp_path / "c")
    blob = (root / "train").read_bytes()
    (root / "train").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="corrupt CIFAR-100 pickle") as err:
        load_cifar100(root)
    assert err.value.path == root / "train"
    (root / "test").write_bytes(b"not a pickle at all")
    with pytest.raises(DataError) as err:
        load_cifar100(root)
    assert err.value.path.name in ("train", "test")


def test_cifar_pickle_with_wrong_content_is_a_data_error(tmp_path):
    root = write_cifar100(tmp_path / "c")
    with open(root / "test", "wb") as fh:
        pickle.dump({b"data": np.zeros((3, 100), np.uint8), b"fine_labels": [0, 1, 2]}, fh)
    with pytest.raises(DataError, match="uint8 N×3072"):
        load_cifar100(root)
    (root / "meta").unlink()
    with pytest.raises(DataError, match="not found") as err:
        load_cifar100(root)
    assert err.value.path == root / "meta"


def test_cifar_fixture_trains_with_resnet32(tmp_path):
    root = write_cifar100(tmp_path / "c", per_class_train=6, per_class_test=2)
    cfg = tiny_config("lucir", "data.name=cifar100", f"data.root={root}", "data.subset=null",
                      "protocol.class_order=seed1993", "protocol.class_order=[68,56,78,8]", "protocol.n_base=2",
                      "protocol.n_phases=1", "protocol.memory.size=2", "method.balanced_finetune=true",
                      "method.balanced_finetune_epochs=1")  # the finetuning's crop+flip path
    result = run(cfg, tmp_path / "run", progress=False)
    assert len(result.matrices["cnn"].per_task) == 2
    assert result.metrics["dataset"] == "cifar100"


def write_imagenet_subset(root, wnids=("n01", "n02", "n03"), per_class=3):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for w in wnids:
            (root / split / w).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / w / f"{w}_{i}.JPEG", format="JPEG")
    (root / "classes.txt").write_text("".join(f"{w} name of {w}\n" for w in wnids) + "# comment\n")
    return root


def test_imagenet_subset_folder_layout(tmp_path):
    root = write_imagenet_subset(tmp_path / "inet")
    data = load_imagenet_subset(root, image_size=16)
    assert data.class_names == ("name of n01", "name of n02", "name of n03")
    assert len(data.train) == 9 and len(data.test) == 9
    x = data.train.load(np.array([0, 4, 8]))
    assert x.shape == (3, 3, 16, 16) and x.dtype == torch.uint8
    assert list(data.train.labels[[0, 4, 8]]) == [0, 1, 2]


def test_imagenet_subset_errors_name_the_file(tmp_path):
    root = write_imagenet_subset(tmp_path / "inet")
    (root / "other.txt").write_text("n01\nn09\n")
    with pytest.raises(DataError, match="missing from the train split") as err:
        load_imagenet_subset(root, root / "other.txt")
    assert err.value.path == root / "train" / "n09"
    with pytest.raises(DataError, match="class list not found"):
        load_imagenet_subset(root, root / "nope.txt")
    (root / "bad.txt").write_text("n01\nn01\n")
    with pytest.raises(DataError, match="'n01' more than once"):
        load_imagenet_subset(root, root / "bad.txt")
    (root / "bad.txt").write_text("n01 one name\nn01 another\n")
    with pytest.raises(DataError, match=r"repeats \['n01'\]"):
        load_imagenet_subset(root, root / "bad.txt")
    (root / "train" / "n02" / "n02_0.JPEG").write_bytes(b"garbage")
    data = load_imagenet_subset(root, image_size=8)
    with pytest.raises(DataError, match="n02_0.JPEG"):
        data.train.load(np.array([3]))


def test_fashion_mnist_subset_and_subsampling():
    data = load_fashion_mnist_cil(subset=True)
    assert data.n_classes == 10 and len(data.train) == 2000 and len(data.test) == 500
    small = data.subsample(7, 3, seed=0)
    assert np.bincount(small.train.labels).tolist() == [7] * 10 and len(small.test) == 30
    again = data.subsample(7, 3, seed=0)
    assert (again.train.load(np.arange(70)) == small.train.load(np.arange(70))).all()


def test_preprocess_is_replayable_from_its_generator():
    x = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    pre = Preprocess((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "crop_flip", pad=2)
    a = pre(x, torch.Generator().manual_seed(3))
    b = pre(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (6, 3, 8, 8)
    plain = pre(x)
    assert torch.allclose(plain, (x.float() / 255 - 0.5) / 0.25)
