"""What ``predict`` reads: every example in, in order, or one clear error.

CSV files are read row for row (the rows out line up with the rows in: no data row taken
for a header, no header predicted as an example); missing cells, NaN and infinities, text
and complex numbers are refused with where they are and the fix; so is a device that cannot
hold the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from hpo_trainer import cli
from hpo_trainer.apps.inputs import read_input
from hpo_trainer.base.errors import ConfigError, DataError
from hpo_trainer.train.devices import resolve_device

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """The first 12 digits: 64 pixel values each, whole numbers from 0 to 16."""
    return load_digits().data[:12].astype(np.float32)


def _csv(path: Path, lines: list[str], *, bom: bool = False) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8-sig" if bom else "utf-8")
    return path


def _rows(x: np.ndarray, fmt=repr) -> list[str]:
    return [",".join(fmt(float(v)) for v in row) for row in x]


def _read(path: Path, **kwargs) -> np.ndarray:
    tensor, names = read_input(path, **kwargs)
    assert names is None
    return tensor.numpy()


# -- CSV: which rows are examples ------------------------------------------------------------


def test_a_numeric_header_of_column_numbers_is_not_an_example(tmp_path, digits):
    # what pandas.DataFrame(x).to_csv(index=False) writes
    path = _csv(tmp_path / "x.csv", [",".join(map(str, range(64))), *_rows(digits)])
    assert np.array_equal(_read(path), digits)
    # ... and the same counted from 1
    path = _csv(tmp_path / "y.csv", [",".join(map(str, range(1, 65))), *_rows(digits)])
    assert np.array_equal(_read(path), digits)


def test_a_utf8_bom_does_not_turn_the_first_example_into_a_header(tmp_path, digits):
    path = _csv(tmp_path / "x.csv", _rows(digits), bom=True)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert np.array_equal(_read(path), digits)
    named = _csv(tmp_path / "n.csv", [",".join(f"p{i}" for i in range(64)), *_rows(digits)])
    assert np.array_equal(_read(named), digits)
    named.write_text(named.read_text(), encoding="utf-8-sig")  # a BOM before a text header
    assert np.array_equal(_read(named), digits)


def test_a_missing_cell_in_the_first_row_is_refused_not_read_as_a_header(tmp_path, digits):
    lines = _rows(digits[:3])
    cells = lines[0].split(",")
    cells[4] = ""
    lines[0] = ",".join(cells)
    path = _csv(tmp_path / "x.csv", lines)
    with pytest.raises(
        DataError,
        match=r"must have a number in every cell, but 1 cell\(s\) are missing .*: data row 1 "
        r"\(line 1\), column 5: ''; fill them in or drop those rows first; if line 1 is a "
        r"header, say so with header=True \(--header yes\)$",
    ):
        read_input(path)


@pytest.mark.parametrize("token", ["NA", "nan", "NaN", "null", "N/A", "", " ", "None", "<NA>"])
def test_missing_cells_are_refused_naming_row_line_and_column(tmp_path, token):
    path = _csv(tmp_path / "x.csv", ["a,b,c", "1,2,3", "", f"4,{token},6", f"{token},8,9"])
    with pytest.raises(
        DataError,
        match=r"2 cell\(s\) are missing \(empty, NA, NaN, null, \.\.\.\): data row 2 \(line 4\), "
        r"column 2 \('b'\): .*; data row 3 \(line 5\), column 1 \('a'\): .*; fill them in or "
        r"drop those rows first$",
    ):
        read_input(path)


def test_the_header_can_be_said_explicitly(tmp_path):
    path = _csv(tmp_path / "x.csv", ["0,1,2", "3,4,5", "6,7,8"])
    assert _read(path).tolist() == [[3, 4, 5], [6, 7, 8]]  # auto: the column numbers
    assert _read(path, header=False).tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert _read(path, header=True).tolist() == [[3, 4, 5], [6, 7, 8]]
    plain = _csv(tmp_path / "p.csv", ["5,4,3", "3,4,5"])
    assert _read(plain).tolist() == [[5, 4, 3], [3, 4, 5]]  # auto: numbers are data
    assert _read(plain, header=True).tolist() == [[3, 4, 5]]
    one = _csv(tmp_path / "one.csv", ["0,1,2"])
    assert _read(one).tolist() == [[0, 1, 2]]  # a single row is an example, whatever it holds
    named = _csv(tmp_path / "named.csv", ["id,x", "7,1"])
    with pytest.raises(
        DataError,
        match=r"2 cell\(s\) hold text: data row 1 \(line 1\), column 1: 'id'; .*remove text "
        r"columns \(ids, labels\) first; line 1 looks like a header: pass header=True "
        r"\(--header yes\)",
    ):
        read_input(named, header=False)
    np.save(tmp_path / "x.npy", np.ones((2, 2)))
    with pytest.raises(ConfigError, match=r"header=True applies to .csv inputs only.*x\.npy'"):
        read_input(tmp_path / "x.npy", header=True)


@pytest.mark.parametrize("first", ["0,1", "1,2", "0", "1"])
def test_a_short_row_of_column_numbers_is_ambiguous_and_must_be_said(tmp_path, first):
    width = first.count(",") + 1
    path = _csv(tmp_path / "x.csv", [first, ",".join(["5"] * width)])
    with pytest.raises(DataError, match=rf"starts with the row '{first}', which may be a header"):
        read_input(path)
    assert len(_read(path, header=False)) == 2 and len(_read(path, header=True)) == 1


def test_rows_of_other_widths_and_text_cells_name_their_lines(tmp_path):
    path = _csv(tmp_path / "x.csv", ["a,b,c", "1,2,3", "4,5"])
    with pytest.raises(
        DataError,
        match=r"same number of columns in every row, got \[2, 3\]: the header \(line 1\) has "
        r"3, but data row 2 \(line 3\) has 2",
    ):
        read_input(path)
    path = _csv(tmp_path / "y.csv", ["a,b", "1,2", "3,x7"])
    with pytest.raises(DataError, match=r"data row 2 \(line 3\), column 2 \('b'\): 'x7'"):
        read_input(path)
    with pytest.raises(DataError, match=r"holds a header row but no examples"):
        read_input(_csv(tmp_path / "h.csv", ["a,b"]))
    (tmp_path / "u.csv").write_bytes("1,2\n".encode("utf-16"))
    with pytest.raises(DataError, match=r"must be UTF-8 text.*save it as UTF-8"):
        read_input(tmp_path / "u.csv")


# -- NaN and infinities ------------------------------------------------------------------------


def _with_bad_rows(digits: np.ndarray) -> np.ndarray:
    x = digits.copy()
    x[2, 5] = np.nan
    x[7, 0] = np.inf
    x[9, 63] = -np.inf
    return x


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".pt"])
def test_nan_or_inf_in_an_array_file_is_refused_naming_the_examples(tmp_path, digits, suffix):
    x = _with_bad_rows(digits)
    path = tmp_path / f"x{suffix}"
    if suffix == ".npy":
        np.save(path, x)
    elif suffix == ".npz":
        np.savez(path, inputs=x)
    else:
        torch.save(torch.from_numpy(x), path)
    with pytest.raises(
        DataError,
        match=r"must hold finite numbers, but 3 of its 12 examples hold NaN or infinite values: "
        r"examples \(rows, counted from 0\) 2, 7, 9; fill them in \(e\.g\. np\.nan_to_num\) or "
        r"drop those examples first",
    ):
        read_input(path)


def test_many_bad_examples_are_counted_and_the_first_named(tmp_path):
    x = np.zeros((100, 3), dtype=np.float32)
    x[10:60, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(
        DataError, match=r"50 of its 100 examples .*: .* 10, 11, 12, 13, 14, \.\.\."
    ):
        read_input(tmp_path / "x.npy")


def test_inf_in_a_csv_or_past_float32_is_refused_naming_the_cell(tmp_path):
    path = _csv(tmp_path / "x.csv", ["a,b", "1,2", "inf,3", "4,1e39"])
    with pytest.raises(
        DataError,
        match=r"must hold finite numbers \(within float32's range, about 3\.4e38\), but 2 "
        r"cell\(s\) are not: data row 2 \(line 3\), column 1 \('a'\): 'inf'; data row 3 "
        r"\(line 4\), column 2 \('b'\): '1e39'; replace them or drop those rows first",
    ):
        read_input(path)


def test_nan_from_an_image_transform_is_refused_naming_the_images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name, value in [("a.png", 0), ("b.png", 255), ("c.png", 0)]:
        Image.new("L", (4, 4), color=value).save(folder / name)

    def normalise(image: Image.Image) -> torch.Tensor:  # std 0: 0/0 on flat images
        x = torch.tensor(np.asarray(image), dtype=torch.float32)
        return (x - x.mean()) / x.std() if x.max() == 0 else x / 255

    with pytest.raises(
        DataError,
        match=r"2 of its 3 examples hold NaN or infinite values: images 'a.png', 'c.png'; "
        r"check the study's EVAL_TRANSFORM",
    ):
        read_input(folder, transform=normalise)


# -- what is not numbers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.array(["a", "b"]), r"holds text \(dtype <U1\); convert the text to numbers first"),
        (np.array([b"a"]), r"holds bytes \(text\) \(dtype \|S1\)"),
        (np.array([1 + 2j, 3]), r"holds complex numbers \(dtype complex128\); give real numbers"),
        (np.array([True, False]), r"holds booleans \(dtype torch.bool\)"),
        (np.zeros(2, dtype=[("a", "f4")]), r"holds structured records .*give one plain numeric"),
    ],
    ids=["str", "bytes", "complex", "bool", "records"],
)
def test_arrays_that_are_not_real_numbers_are_refused(tmp_path, array, match):
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(
        DataError, match=r"input '.*x\.npy' must hold real numbers, but it " + match
    ):
        read_input(tmp_path / "x.npy")


def test_object_arrays_and_complex_tensors_are_refused_clearly(tmp_path):
    np.save(tmp_path / "o.npy", np.array([1, "a", None], dtype=object), allow_pickle=True)
    with pytest.raises(
        DataError,
        match=r"must hold a numeric array, but it holds Python objects \(an object array\), "
        r"which are not loaded because loading them could run code; save numbers instead",
    ):
        read_input(tmp_path / "o.npy")
    torch.save(torch.tensor([[1 + 1j, 2]]), tmp_path / "c.pt")
    with pytest.raises(DataError, match=r"holds complex numbers \(dtype torch.complex64\)"):
        read_input(tmp_path / "c.pt")


def test_good_inputs_are_read_as_they_are(tmp_path, digits):
    np.save(tmp_path / "x.npy", digits.astype(np.float16))
    assert _read(tmp_path / "x.npy").dtype == np.float16
    np.save(tmp_path / "i.npy", np.arange(6, dtype=np.uint8).reshape(3, 2))
    assert _read(tmp_path / "i.npy").tolist() == [[0, 1], [2, 3], [4, 5]]
    _csv(tmp_path / "big.csv", ["3e38,-1.5", "0.25,7"])  # 3e38 is within float32's range
    assert _read(tmp_path / "big.csv").tolist() == [[float(np.float32(3e38)), -1.5], [0.25, 7]]


# -- the device ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "match"),
    [
        ("meta", r"got 'meta': the 'meta' device type cannot run training or prediction"),
        (torch.device("meta"), r"got 'meta': the 'meta' device type"),
        ("xla", r"got 'xla': the 'xla' device type"),
        ("gpu", r"got 'gpu'\. A GPU is 'cuda' \(or 'cuda:0', 'cuda:1', \.\.\.\)"),
        ("cuda:x", r"got 'cuda:x'\. A GPU is 'cuda'"),
        ("cpuu", r"got 'cpuu'\. Did you mean 'cpu'\?"),
    ],
)
def test_a_device_that_cannot_hold_the_model_is_refused(device, match):
    with pytest.raises(
        ConfigError, match=r"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', " + match
    ):
        resolve_device(device)
    assert resolve_device("cpu") == torch.device("cpu")


def test_predict_with_device_meta_is_refused_before_any_work(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({}))
    np.save(tmp_path / "x.npy", np.ones((2, 64), dtype=np.float32))
    out = tmp_path / "p.csv"
    argv = ["predict", str(run), "--input", str(tmp_path / "x.npy"), "--out", str(out)]
    assert cli.main([*argv, "--device", "meta"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    assert "Traceback" not in err and not out.exists()


def test_a_first_row_mixing_numbers_and_text_is_not_taken_for_a_header(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("1,2,abc\n4,5,6\n")
    with pytest.raises(DataError, match=r"mixes numbers and text.*--header yes / --header no"):
        read_input(path)
    path.write_text("1_0,2,3\n4,5,6\n")  # Python's float() would read 10
    with pytest.raises(DataError):
        read_input(path)


def test_the_default_image_transform_keeps_or_drops_colour(tmp_path):
    from hpo_trainer.apps.inputs import default_transform

    image = Image.new("RGB", (4, 3), (255, 0, 0))
    rgb, gray = default_transform()(image), default_transform(gray=True)(image)
    assert rgb.shape == (3, 3, 4) and float(rgb[0].min()) == 1.0 and float(rgb[1].max()) == 0.0
    assert gray.shape == (1, 3, 4) and 0 < float(gray.max()) < 1
