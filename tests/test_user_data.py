"""The user's own data: .npz arrays, image folders and `_target_` returns (check.py), their round
trips, inferred description, one-line errors and the folder cache."""
import logging
import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from sbrun.data import DataError, folder
from sbrun.data.arrays import load_arrays
from sbrun.data.check import as_train_test, channel_stats, describe
from sbrun.data.folder import load_folder


def rand_images(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def arrays(n_train=20, n_test=6, hwc=(8, 8, 3), k=4, seed=0):
    rng = np.random.default_rng(seed)
    return {"x_train": rand_images((n_train, *hwc), seed), "y_train": rng.integers(0, k, n_train),
            "x_test": rand_images((n_test, *hwc), seed + 1), "y_test": rng.integers(0, k, n_test)}


def save_npz(path, **arrs):
    np.savez(path, **arrs)
    return path


def one_line_error(fn, *words):
    """Run fn, expect a DataError of one line containing every word; return the message."""
    with pytest.raises(DataError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    return msg


def numpy_stats(x_nhwc):
    x = x_nhwc.astype(np.float64) / 255.0
    return x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))


# --- arrays: round trips -------------------------------------------------------------------------

def test_npz_round_trip_channels_last_with_class_names(tmp_path):
    a = arrays()
    names = np.array(["ant", "bee", "cat", "dog"])
    path = save_npz(tmp_path / "d.npz", **a, classes=names)
    data = load_arrays(path)
    assert data.train.images.dtype == torch.uint8 and data.train.labels.dtype == torch.int64
    assert tuple(data.train.images.shape) == (20, 3, 8, 8) and tuple(data.test.images.shape) == (6, 3, 8, 8)
    assert np.array_equal(data.train.images.numpy(), a["x_train"].transpose(0, 3, 1, 2))
    assert np.array_equal(data.test.images.numpy(), a["x_test"].transpose(0, 3, 1, 2))
    assert np.array_equal(data.train.labels.numpy(), a["y_train"])
    assert data.classes == ["ant", "bee", "cat", "dog"]
    info = describe(data)
    assert (info["num_classes"], info["channels"], info["image_size"]) == (4, 3, 8)
    assert info["classes"] == ["ant", "bee", "cat", "dog"]
    mean, std = numpy_stats(a["x_train"])     # train images only
    # Both sides are float64 over the same integers; 1e-12 allows for summation order.
    assert np.allclose(info["mean"], mean, rtol=0, atol=1e-12)
    assert np.allclose(info["std"], std, rtol=0, atol=1e-12)


def test_grayscale_npz_infers_one_channel_and_classes_from_both_splits(tmp_path):
    a = arrays(hwc=(6, 6), k=3)
    a["y_test"][0] = 6                        # the largest label only occurs in test
    data = load_arrays(save_npz(tmp_path / "g.npz", **a))
    assert tuple(data.train.images.shape) == (20, 1, 6, 6)
    assert np.array_equal(data.train.images[:, 0].numpy(), a["x_train"])
    info = describe(data)
    assert info["num_classes"] == 7 and info["channels"] == 1 and info["image_size"] == 6
    assert info["classes"] == [str(i) for i in range(7)]
    x = a["x_train"].astype(np.float64) / 255
    assert info["mean"] == pytest.approx([x.mean()], abs=1e-12)
    assert info["std"] == pytest.approx([x.std()], abs=1e-12)


def test_single_channel_last_axis_and_column_labels(tmp_path):
    a = arrays(hwc=(5, 5, 1))
    a["y_train"] = a["y_train"][:, None]      # (N, 1) columns, as .mat files store labels
    data = load_arrays(save_npz(tmp_path / "c.npz", **a))
    assert tuple(data.train.images.shape) == (20, 1, 5, 5)
    assert data.train.labels.shape == (20,)


def test_describe_respects_a_given_num_classes():
    data = as_train_test(arrays(k=3), "mem", )
    top = int(max(data.train.labels.max(), data.test.labels.max()))
    info = describe(data, num_classes=10)
    assert info["num_classes"] == 10 and info["classes"] == [str(i) for i in range(10)]
    one_line_error(lambda: describe(data, num_classes=top, source="mem"),
                   "mem", f"labels go up to {top}", f"0..{top - 1}")


def test_describe_pads_names_and_refuses_fewer_classes_than_names():
    data = as_train_test({**arrays(k=2), "classes": ["a", "b", "c"]}, "mem")
    assert describe(data)["num_classes"] == 3          # a named class without examples still counts
    assert describe(data, num_classes=5)["classes"] == ["a", "b", "c", "3", "4"]
    one_line_error(lambda: describe(data, num_classes=2, source="mem"), "num_classes is 2", "3 classes")


def test_one_class_is_refused():
    a = arrays()
    a["y_train"][:] = 0
    a["y_test"][:] = 0
    one_line_error(lambda: describe(as_train_test(a, "mem"), source="mem"), "at least 2 classes")


def test_channel_stats_is_exact_whatever_the_chunk():
    x = torch.from_numpy(rand_images((37, 3, 5, 5), seed=3))
    whole = channel_stats(x)
    # One image per chunk and a prime-sized chunk: integer sums make the results bit-identical.
    assert channel_stats(x, chunk_values=1) == whole
    assert channel_stats(x, chunk_values=7 * 75) == whole
    mean, std = numpy_stats(x.permute(0, 2, 3, 1).numpy())
    assert np.allclose(whole[0], mean, rtol=0, atol=1e-12) and np.allclose(whole[1], std, rtol=0, atol=1e-12)


def test_a_constant_channel_gets_std_one():
    a = arrays()
    a["x_train"][..., 1] = 200
    info = describe(as_train_test(a, "mem"))
    assert info["std"][1] == 1.0 and info["mean"][1] == pytest.approx(200 / 255)
    assert channel_stats(torch.full((4, 1, 3, 3), 7, dtype=torch.uint8))[1] == [0.0]


# --- as_train_test: the forms a user's _target_ may return ---------------------------------------

def test_torch_tensors_channels_first_and_last_give_the_same_set():
    a = arrays(hwc=(8, 8, 3))
    nhwc = {k: torch.from_numpy(v) for k, v in a.items()}
    nchw = {**nhwc, "x_train": nhwc["x_train"].permute(0, 3, 1, 2), "x_test": nhwc["x_test"].permute(0, 3, 1, 2)}
    ref = as_train_test(a, "numpy")
    for form in (nhwc, nchw):
        got = as_train_test(form, "torch")
        assert torch.equal(got.train.images, ref.train.images) and torch.equal(got.test.images, ref.test.images)
        assert torch.equal(got.train.labels, ref.train.labels)


def test_tuples_objects_and_train_test_are_accepted():
    a = arrays()
    ref = as_train_test(a, "dict")
    four = (a["x_train"], a["y_train"], a["x_test"], a["y_test"])
    keras = ((a["x_train"], a["y_train"]), (a["x_test"], a["y_test"]))
    obj = SimpleNamespace(**a, classes=["w", "x", "y", "z"])
    for form in (four, keras, obj, ref):
        got = as_train_test(form, "form")
        assert torch.equal(got.train.images, ref.train.images) and torch.equal(got.test.labels, ref.test.labels)
    assert as_train_test(obj, "obj").classes == ["w", "x", "y", "z"]


def test_unsupported_returns_are_one_line():
    one_line_error(lambda: as_train_test(42, "my_pkg.data.MyData"), "my_pkg.data.MyData", "int", "x_train")
    one_line_error(lambda: as_train_test((1, 2, 3), "my_pkg.f"), "3 items", "x_train, y_train, x_test, y_test")
    a = arrays()
    one_line_error(lambda: as_train_test({**a, "x_test": [[1, 2], [3]]}, "src"), "x_test", "not an array")


# --- every validation error is one line ----------------------------------------------------------

def bad(**changes):
    a = arrays()
    a.update(changes)
    return a


@pytest.mark.parametrize("arrs, words", [
    (bad(y_train=np.zeros(19, dtype=np.int64)), ["x_train has 20 images", "y_train has 19 labels"]),
    (bad(y_test=np.array([0, 1, -1, 2, 0, 1])), ["y_test", "negative", "0..K-1"]),
    (bad(y_train=np.zeros(20, dtype=np.float32)), ["y_train", "float32", "integers"]),
    (bad(y_test=np.array(["cat"] * 6)), ["y_test", "<U3", "integers"]),
    (bad(x_train=rand_images((20, 8, 8, 3)).astype(np.float32) / 255),
     ["x_train", "float32", "uint8 0-255", "not converted"]),
    (bad(x_test=rand_images((6, 8, 8, 1))), ["3 channel(s) of 8x8", "1 channel(s) of 8x8", "same"]),
    (bad(x_test=rand_images((6, 10, 10, 3))), ["8x8", "10x10", "same"]),
    (bad(x_train=rand_images((20, 8, 6, 3)), x_test=rand_images((6, 8, 6, 3))), ["8x6", "resize to square"]),
    (bad(x_test=rand_images((0, 8, 8, 3)), y_test=np.zeros(0, dtype=np.int64)), ["test split is empty"]),
    (bad(x_train=rand_images((20, 3, 8, 8))), ["(20, 3, 8, 8)", "channels-first", "transpose(0, 2, 3, 1)"]),
    (bad(x_train=rand_images((20, 2, 8, 8, 3))), ["x_train", "NxHxW or NxHxWxC"]),
    (bad(y_train=np.zeros((20, 2), dtype=np.int64)), ["y_train", "(20, 2)", "one integer per image"]),
])
def test_validation_errors_are_one_line(tmp_path, arrs, words):
    path = save_npz(tmp_path / "bad.npz", **arrs)
    one_line_error(lambda: load_arrays(path), str(path), *words)


def test_labels_beyond_the_class_names_or_num_classes(tmp_path):
    a = arrays(k=4)
    a["y_train"][3] = 4
    path = save_npz(tmp_path / "n.npz", **a, classes=np.array(["a", "b", "c", "d"]))
    one_line_error(lambda: load_arrays(path), "labels go up to 4", "4 classes", "0..3")
    one_line_error(lambda: as_train_test(a, "mem", num_classes=3), "labels go up to 4", "num_classes is 3")


# --- arrays: file errors -------------------------------------------------------------------------

def test_file_errors_are_one_line(tmp_path):
    one_line_error(lambda: load_arrays(tmp_path / "nope.npz"), "no such file", "x_train, y_train, x_test, y_test")
    one_line_error(lambda: load_arrays(tmp_path), "is a directory", "dataset=folder")
    (tmp_path / "empty.npz").write_bytes(b"")
    one_line_error(lambda: load_arrays(tmp_path / "empty.npz"), "not an .npz", "empty", "np.savez")
    (tmp_path / "text.npz").write_text("x_train,y_train\n1,2\n")
    one_line_error(lambda: load_arrays(tmp_path / "text.npz"), "not an .npz", "np.savez")
    np.save(tmp_path / "one.npy", rand_images((4, 8, 8)))
    one_line_error(lambda: load_arrays(tmp_path / "one.npy"), "single .npy array", "np.savez")
    good = save_npz(tmp_path / "good.npz", **arrays())
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[:300])
    one_line_error(lambda: load_arrays(tmp_path / "cut.npz"), "cut.npz", "damaged")


def test_pickles_are_refused(tmp_path):
    (tmp_path / "p.npz").write_bytes(pickle.dumps(arrays()))
    one_line_error(lambda: load_arrays(tmp_path / "p.npz"), "pickle", "refused")
    obj = np.empty(20, dtype=object)
    obj[:] = [np.zeros((8, 8, 3), np.uint8)] * 20
    path = save_npz(tmp_path / "o.npz", **bad(x_train=obj))
    one_line_error(lambda: load_arrays(path), "x_train", "Python objects", "refused")


def test_missing_keys_are_named(tmp_path):
    a = arrays()
    path = save_npz(tmp_path / "m.npz", X_train=a["x_train"], y_train=a["y_train"], x_test=a["x_test"])
    msg = one_line_error(lambda: load_arrays(path), "missing x_train, y_test", "X_train", "optionally classes")
    assert "y_train," not in msg.split("(found")[0]


# --- image folders -------------------------------------------------------------------------------

def save_image(path: Path, array: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return path


def make_folder(root: Path, spec, shape=(8, 8, 3), seed=0):
    """spec: {split: {class: n_images}}; returns {(split, class): [arrays]} in file order."""
    rng = np.random.default_rng(seed)
    made = {}
    for split, classes in spec.items():
        for cls, n in classes.items():
            made[split, cls] = [save_image(root / split / cls / f"{i:02d}.png",
                                           rng.integers(0, 256, shape, dtype=np.uint8)) for i in range(n)]
    return {key: [np.asarray(Image.open(p)) for p in paths] for key, paths in made.items()}


def test_folder_round_trip_maps_sorted_class_names(tmp_path):
    made = make_folder(tmp_path, {"train": {"zebra": 2, "ant": 3, "moth": 1}, "test": {"zebra": 2, "ant": 1}})
    (tmp_path / "train" / "ant" / ".DS_Store").write_bytes(b"\0\1junk")     # hidden: ignored
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()                    # hidden folder: not a class
    data = load_folder(tmp_path, image_size=8)
    assert data.classes == ["ant", "moth", "zebra"]
    assert data.train.labels.tolist() == [0, 0, 0, 1, 2, 2] and data.test.labels.tolist() == [0, 2, 2]
    # Images already 8x8 pass through the resize unchanged.
    want = np.stack(made["train", "ant"] + made["train", "moth"] + made["train", "zebra"]).transpose(0, 3, 1, 2)
    assert np.array_equal(data.train.images.numpy(), want)
    info = describe(data)
    assert (info["num_classes"], info["channels"], info["image_size"]) == (3, 3, 8)


def test_folder_progress_bar_can_be_forced_on(tmp_path, capsys):
    make_folder(tmp_path, {"train": {"a": 1, "b": 1}, "test": {"a": 1}})
    load_folder(tmp_path, 8, progress=True)
    assert "decoding" in capsys.readouterr().err
    load_folder(tmp_path, 4)           # another size decodes again; not a terminal: no bar
    assert "decoding" not in capsys.readouterr().err


def test_folder_channels_are_inferred_or_forced(tmp_path):
    gray = tmp_path / "gray"
    make_folder(gray, {"train": {"a": 2, "b": 2}, "test": {"a": 1}}, shape=(6, 6))
    assert tuple(load_folder(gray, 6).train.images.shape) == (4, 1, 6, 6)
    assert tuple(load_folder(gray, 6, channels=3).train.images.shape) == (4, 3, 6, 6)
    mixed = tmp_path / "mixed"
    made = make_folder(mixed, {"train": {"a": 2}, "test": {"a": 1}}, shape=(6, 6))
    save_image(mixed / "train" / "b" / "rgb.png", rand_images((6, 6, 3)))
    data = load_folder(mixed, 6)
    assert data.train.images.shape[1] == 3
    for c in range(3):   # a grayscale image fills every channel of an RGB set
        assert np.array_equal(data.train.images[0, c].numpy(), made["train", "a"][0])
    assert tuple(load_folder(mixed, 6, channels=1).train.images.shape) == (3, 1, 6, 6)


def test_folder_center_crops_to_a_square_and_resizes(tmp_path):
    wide = np.zeros((6, 12), np.uint8)
    wide[:, 3:9] = 255                       # only the middle square is white
    save_image(tmp_path / "train" / "a" / "wide.png", wide)
    save_image(tmp_path / "train" / "b" / "photo.jpg",
               np.full((100, 200, 3), (250, 10, 10), np.uint8), quality=95)
    save_image(tmp_path / "test" / "a" / "x.png", wide)
    data = load_folder(tmp_path, 6)
    assert tuple(data.train.images.shape) == (2, 3, 6, 6)
    assert (data.train.images[0] == 255).all()       # a plain resize would keep black borders
    red = data.train.images[1].reshape(3, -1).float().mean(dim=1)
    assert torch.allclose(red, torch.tensor([250.0, 10.0, 10.0]), atol=4)   # JPEG rounding


def _folder_error(root, *words, **kw):
    return one_line_error(lambda: load_folder(root, kw.get("image_size", 8), kw.get("channels")), *words)


def test_folder_layout_errors_are_one_line(tmp_path):
    _folder_error(tmp_path / "none", "no such directory", "DIR/train/<class>")
    make_folder(tmp_path, {"train": {"a": 1, "b": 1}})
    _folder_error(tmp_path, "missing the test/ split", "DIR/test/<class>")
    (tmp_path / "test").mkdir()
    _folder_error(tmp_path, "test", "no class folders")
    make_folder(tmp_path, {"test": {"a": 1, "c": 1, "d": 1}}, seed=1)
    _folder_error(tmp_path, "c, d not in train/", "(a, b)")


def test_folder_content_errors_name_the_file(tmp_path):
    make_folder(tmp_path, {"train": {"a": 2, "b": 1}, "test": {"a": 1}})
    (tmp_path / "train" / "empty").mkdir()
    _folder_error(tmp_path, str(tmp_path / "train" / "empty"), "no images")
    (tmp_path / "train" / "empty").rmdir()
    (tmp_path / "train" / "b" / "notes.txt").write_text("labels are noisy")
    _folder_error(tmp_path, str(tmp_path / "train" / "b" / "notes.txt"), "not an image", ".png", ".jpg")
    (tmp_path / "train" / "b" / "notes.txt").unlink()
    (tmp_path / "train" / "README").write_text("stray")
    _folder_error(tmp_path, "README", "only hold class folders")
    (tmp_path / "train" / "README").unlink()
    (tmp_path / "test" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    _folder_error(tmp_path, str(tmp_path / "test" / "a" / "broken.png"), "unreadable or corrupt")
    _folder_error(tmp_path, "dataset.channels", "1 (grayscale)", channels=2)
    _folder_error(tmp_path, "dataset.image_size", image_size=0)


# --- image folders: the cache --------------------------------------------------------------------

@pytest.fixture
def decodes(monkeypatch):
    """Counts calls to the image decoder (and still decodes)."""
    calls = []
    real = folder.decode_image

    def spy(path, image_size, channels, *crop_and_gen):
        calls.append(Path(path).name)
        return real(path, image_size, channels, *crop_and_gen)
    monkeypatch.setattr(folder, "decode_image", spy)
    return calls


def test_second_load_decodes_nothing(tmp_path, monkeypatch):
    make_folder(tmp_path, {"train": {"a": 3, "b": 2}, "test": {"a": 1, "b": 1}})
    first = load_folder(tmp_path, 8)
    assert len(list((tmp_path / folder.CACHE_DIR).glob("*.npz"))) == 1

    def no_decoding(*args):
        raise AssertionError("decoded an image although the cache is valid")
    monkeypatch.setattr(folder, "decode_image", no_decoding)
    second = load_folder(tmp_path, 8)
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.test.labels, second.test.labels) and first.classes == second.classes
    with pytest.raises(DataError):   # another size is another cache entry: it must decode
        load_folder(tmp_path, 4)


def test_a_changed_folder_is_decoded_again(tmp_path, decodes):
    make_folder(tmp_path, {"train": {"a": 2, "b": 1}, "test": {"a": 1}})
    target = save_image(tmp_path / "train" / "b" / "01.bmp", rand_images((8, 8, 3)))
    load_folder(tmp_path, 8)
    assert len(decodes) == 5
    size = target.stat().st_size
    save_image(target, np.full((8, 8, 3), 9, np.uint8))
    st = target.stat()
    assert st.st_size == size            # BMP: same size, so only the mtime tells the change
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))   # a coarse-mtime filesystem still differs
    data = load_folder(tmp_path, 8)
    assert len(decodes) == 10 and (data.train.images[3] == 9).all()
    save_image(tmp_path / "test" / "b" / "new.png", rand_images((8, 8, 3)))
    assert load_folder(tmp_path, 8).test.labels.tolist() == [0, 1]
    assert len(decodes) == 16
    load_folder(tmp_path, 8)
    assert len(decodes) == 16


def test_unwritable_cache_location_still_loads(tmp_path, decodes, caplog):
    make_folder(tmp_path, {"train": {"a": 2, "b": 1}, "test": {"a": 1}})
    (tmp_path / folder.CACHE_DIR).write_text("a file where the cache folder would go")
    with caplog.at_level(logging.WARNING, logger="sbrun"):
        data = load_folder(tmp_path, 8)
        load_folder(tmp_path, 8)
    assert len(data.train) == 3 and len(decodes) == 8       # no cache: both loads decode
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("cache not written" in w and "\n" not in w for w in warnings)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_folder_still_loads(tmp_path, caplog):
    make_folder(tmp_path, {"train": {"a": 2, "b": 1}, "test": {"a": 1}})
    os.chmod(tmp_path, 0o555)
    try:
        with caplog.at_level(logging.WARNING, logger="sbrun"):
            assert len(load_folder(tmp_path, 8).train) == 3
    finally:
        os.chmod(tmp_path, 0o755)
    assert any("cache not written" in r.getMessage() for r in caplog.records)


def test_a_damaged_cache_is_ignored(tmp_path, decodes, caplog):
    make_folder(tmp_path, {"train": {"a": 2, "b": 1}, "test": {"a": 1}})
    first = load_folder(tmp_path, 8)
    (cache,) = (tmp_path / folder.CACHE_DIR).glob("*.npz")
    cache.write_bytes(b"PK\x03\x04 truncated")
    with caplog.at_level(logging.WARNING, logger="sbrun"):
        again = load_folder(tmp_path, 8)
    assert torch.equal(first.train.images, again.train.images) and len(decodes) == 8
    assert any("unreadable image cache" in r.getMessage() for r in caplog.records)
    load_folder(tmp_path, 8)             # rewritten: the third load decodes nothing
    assert len(decodes) == 8
