"""Bad input, case by case: every mistake a user can make ends in one clear HpoTrainerError
(one paragraph and exit code 1 or 2 on the command line), and nothing is written.

Cases marked ``xfail(strict=True)`` are bad inputs that are *not* handled well yet (a raw
exception, a traceback, an unclear message, or files written); each asserts what the user
should get. Remove the mark once the code is fixed.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url
from torch import nn
from torch.optim import SGD

from hpo_trainer import (
    ConfigError,
    DataError,
    Hyperparameters,
    SpaceError,
    StorageError,
    Trainer,
)
from hpo_trainer.apps import export
from hpo_trainer.facade.studyfile import defaults, load_trainer_from_file
from hpo_trainer.search.migrate import migrate
from hpo_trainer.search.storage import mask_url, open_storage, parse_url

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "studies" / "digits_mlp.py"
HPO = Path(sys.executable).parent / "hpo-trainer"
SECRET = "secretpw"
CLOSED_PG = f"postgresql+psycopg://u:{SECRET}@127.0.0.1:1/db"
#: The driver SQLAlchemy picks for a bare ``postgresql://`` (psycopg from 2.1, psycopg2 before).
PG_DEFAULT_DRIVER = make_url("postgresql://h/db").get_dialect().driver


def xfail(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=reason)


def bad(*values, reason: str, id: str | None = None):
    """A table row for a bad input that is not handled well yet."""
    return pytest.param(*values, marks=xfail(reason), id=id)


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# -- a tiny trainer: in-memory data, trains an epoch in milliseconds -----------------------


class TinyNet(nn.Module):
    def __init__(self, hidden: int = 4, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(4, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 2)
        )

    def forward(self, x):
        return self.net(x)


def _data():
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    return x, (x[:, 0] > 0).long()


GOOD = {"optimizer": {"lr": 0.01}, "model": {"hidden": 4, "dropout": 0.1}}


def tiny(tmp_path: Path, **kwargs) -> Trainer:
    """A trainer searching ``optimizer.lr`` and ``model.hidden`` / ``model.dropout``."""
    kwargs = {"runs_dir": tmp_path / "runs", "quiet": True, "seed": 0, "batch_size": 8, **kwargs}
    tr = Trainer(_data(), _data(), **kwargs)
    tr.set_model(TinyNet)
    tr.set_criterion(nn.CrossEntropyLoss)
    tr.set_optimizer(SGD)
    opt = Hyperparameters()
    opt.add_float("lr", 1e-3, 1e-1, log=True)
    tr.set_hyperparameters(opt)
    arch = Hyperparameters()
    arch.add_categorical("hidden", [4, 8])
    arch.add_float("dropout", 0.0, 0.5, step=0.1)
    tr.set_arch_hyperparameters(arch)
    return tr


def nothing_in(path: Path) -> bool:
    return not path.exists() or not any(path.iterdir())


# == 1. the Python API ======================================================================

# -- search spaces ---------------------------------------------------------------------------

SPACE_CASES = [
    pytest.param(lambda: Hyperparameters("optimiser"), "Did you mean 'optimizer'", id="target"),
    pytest.param(lambda: Hyperparameters().add_float("x", 1.0, 0.0), "swap them", id="low>high"),
    pytest.param(
        lambda: Hyperparameters().add_float("x", math.nan, 1), "must be numbers", id="nan-bound"
    ),
    pytest.param(lambda: Hyperparameters().add_float("x", "0", 1), "got '0'", id="str-bound"),
    pytest.param(lambda: Hyperparameters().add_float("x", False, 1), "got False", id="bool-bound"),
    pytest.param(
        lambda: Hyperparameters().add_float("x", 0, 1, log=True), "must be above 0", id="log-0"
    ),
    pytest.param(
        lambda: Hyperparameters().add_float("x", 0, 1, step=0), "step must be positive", id="step0"
    ),
    pytest.param(
        lambda: Hyperparameters().add_float("x", 1, 2, log=True, step=0.1),
        "both log and stepped",
        id="log+step",
    ),
    pytest.param(
        lambda: Hyperparameters().add_float("2x", 0, 1), "Python identifier", id="bad-name"
    ),
    pytest.param(
        lambda: Hyperparameters().add_int("n", 1.5, 3), "use add_float", id="int-float-bound"
    ),
    pytest.param(
        lambda: Hyperparameters().add_int("n", 1, 9, log=True, step=2),
        "log int range must have step 1",
        id="int-log-step",
    ),
    pytest.param(lambda: Hyperparameters().add_int("n", 3, 3), "set_value", id="int-low=high"),
    pytest.param(
        lambda: Hyperparameters().add_categorical("c", []), "at least one choice", id="no-choices"
    ),
    pytest.param(
        lambda: Hyperparameters().add_categorical("c", "relu"), "must be a list", id="str-choices"
    ),
    pytest.param(
        lambda: Hyperparameters().add_categorical("c", [1, 1.0, 2]),
        "must be distinct",
        id="dup-choices",
    ),
    pytest.param(lambda: Hyperparameters().set_range("lr", -1, -5), "swap", id="range-swapped"),
    pytest.param(
        lambda: Hyperparameters().activate("lr"), r"Register it first: register\('lr'\)", id="act"
    ),
    pytest.param(
        lambda: Hyperparameters().register("lr").validate(),
        "neither a range nor a value",
        id="registered-only",
    ),
    pytest.param(
        lambda: Hyperparameters().add_float("m", 0, 1, when={"m": 1}),
        "cannot depend on itself",
        id="when-self",
    ),
    pytest.param(
        lambda: (
            Hyperparameters()
            .add_categorical("kind", ["a", "b"])
            .add_float("m", 0, 1, when={"kidn": "a"})
            .validate()
        ),
        "Did you mean 'kind'",
        id="when-typo",
    ),
    pytest.param(
        lambda: Hyperparameters().add_float("x", 0.0, math.inf),
        "finite",
        id="inf-bound",
    ),
    pytest.param(
        lambda: Hyperparameters().add_float("x", 0.0, 1.0, step="0.1"),
        "step",
        id="str-step",
    ),
    pytest.param(
        lambda: Hyperparameters().add_float("x", 0.0, 1.0, step=math.nan),
        "step",
        id="nan-step",
    ),
    pytest.param(
        lambda: Hyperparameters().add_float("x", 0.0, 1.0, step=5.0),
        "step",
        id="step>range",
    ),
    pytest.param(
        lambda: Hyperparameters().set_range("lr", 1, 400),
        "exponent",
        id="range-overflow",
    ),
    pytest.param(
        lambda: Hyperparameters().set_range("lr", -400, -1),
        "exponent",
        id="range-underflow",
    ),
    pytest.param(
        lambda: Hyperparameters().add_int("n", 0, 10**400),
        "bound",
        id="int-huge",
    ),
    pytest.param(
        lambda: Hyperparameters().register(5),
        "name",
        id="register-int",
    ),
    pytest.param(
        lambda: Hyperparameters().add_float("m", 0, 1, when=["class"]),
        "when",
        id="when-list",
    ),
    pytest.param(
        lambda: Hyperparameters().add_categorical("act", {"relu", "tanh", "gelu"}),
        "order",
        id="set-choices",
    ),
    pytest.param(
        lambda: Hyperparameters().add_float("class", 0.0, 1.0),
        "class",
        id="class-float",
    ),
]


@pytest.mark.parametrize(("action", "match"), SPACE_CASES)
def test_bad_search_space(action, match):
    with pytest.raises(SpaceError, match=match):
        action()


def test_stepped_float_never_leaves_its_range():
    hyp = Hyperparameters("model").add_float("p", 0.0, 0.3, step=0.1)
    assert max(hyp.sample(seed=seed)["p"] for seed in range(200)) <= 0.3


def test_nan_choice_is_refused():
    # NaN equals nothing, not even itself, so a stored NaN could never be matched back
    with pytest.raises(SpaceError, match=r"a categorical choice cannot be NaN, got \[nan, 1\.0\]"):
        Hyperparameters().add_categorical("c", [math.nan, 1.0])


# -- Trainer construction --------------------------------------------------------------------


def _no_cuda(*values, match):
    return pytest.param(
        *values,
        match,
        id="cuda-without-gpu",
        marks=[
            pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA"),
        ],
    )


CONSTRUCTION_CASES = [
    pytest.param({"train_data": None}, DataError, "must be a Dataset", id="train-None"),
    pytest.param({"train_data": 5}, DataError, "got int", id="train-int"),
    pytest.param(
        {"train_data": (torch.zeros(0, 4), torch.zeros(0))}, DataError, "empty", id="empty"
    ),
    pytest.param(
        {"train_data": (torch.zeros(5, 4), torch.zeros(3))}, DataError, "one length", id="rows"
    ),
    pytest.param({"train_data": [1, 2, 3]}, DataError, "must be dicts", id="train-ints"),
    pytest.param({"val_data": "val.csv"}, DataError, "items of the val set", id="val-str"),
    pytest.param({"batch_size": 0}, ConfigError, "batch_size must be a positive", id="bs-0"),
    pytest.param({"batch_size": "64"}, ConfigError, "got '64'", id="bs-str"),
    pytest.param({"grad_clip": -1.0}, ConfigError, "grad_clip must be a positive", id="clip"),
    pytest.param({"grad_clip": math.nan}, ConfigError, "got nan", id="clip-nan"),
    pytest.param({"name": "a/b"}, ConfigError, "without '/'", id="name-slash"),
    pytest.param({"device": "gpu"}, ConfigError, "device must be 'auto'", id="device"),
    pytest.param(
        {"train_data": {"x": [1.0, 2.0], "y": [0, 1]}},
        DataError,
        "train set",
        id="dict-of-lists",
    ),
    pytest.param(
        {"grad_clip": "1"},
        ConfigError,
        "grad_clip",
        id="clip-str",
    ),
    pytest.param(
        {"runs_dir": None},
        ConfigError,
        "runs_dir",
        id="runs-dir-None",
    ),
    pytest.param(
        {"amp": "fp8"},
        ConfigError,
        "amp must be",
        id="amp",
    ),
    pytest.param(
        {"seed": "abc"},
        ConfigError,
        "seed",
        id="seed-str",
    ),
    pytest.param(
        {"num_workers": -1},
        ConfigError,
        "num_workers",
        id="num-workers",
    ),
    _no_cuda({"device": "cuda"}, ConfigError, match="CUDA"),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), CONSTRUCTION_CASES)
def test_bad_trainer_construction(tmp_path, kwargs, error, match):
    kwargs = {"train_data": _data(), "runs_dir": tmp_path / "runs", **kwargs}
    with pytest.raises(error, match=match):
        Trainer(**kwargs)
    assert nothing_in(tmp_path)


# -- Trainer setters and train() -------------------------------------------------------------


def _then_train(setup):
    def action(tr):
        setup(tr)
        tr.train(1, params=GOOD)

    return action


def _lr_space():
    return Hyperparameters().add_float("lr", 1e-3, 1e-1)


TRAIN_CASES = [
    pytest.param(lambda tr: tr.train(0, params=GOOD), "epochs must be an integer >= 1", id="ep0"),
    pytest.param(lambda tr: tr.train("3", params=GOOD), "got '3'", id="epochs-str"),
    pytest.param(
        lambda tr: tr.train(1, update_every=0, params=GOOD), "update_every must", id="upd0"
    ),
    pytest.param(lambda tr: tr.train(1, save_every=0, params=GOOD), "save_every", id="save0"),
    pytest.param(lambda tr: tr.train(1), "still searched.*hyp_opt", id="no-params"),
    pytest.param(
        lambda tr: tr.train(1, params={"lr": 0.01}), "write it as 'optimizer.lr'", id="flat"
    ),
    pytest.param(
        lambda tr: tr.train(1, resume=tr.runs_dir / "nope"), "not a run folder", id="resume"
    ),
    pytest.param(lambda tr: tr.train(1, resume=True), "holds no run named", id="resume-True"),
    pytest.param(_then_train(lambda tr: tr.set_model(None)), "no model is set", id="no-model"),
    pytest.param(
        lambda tr: tr.set_space("optimiser", Hyperparameters()), "Did you mean", id="target"
    ),
    pytest.param(lambda tr: tr.set_hyperparameters({"lr": 0.1}), "got dict", id="space-dict"),
    pytest.param(
        _then_train(
            lambda tr: tr.set_hyperparameters(Hyperparameters().add_float("lrr", 1e-3, 0.1))
        ),
        "'lrr' is not an argument of optimizer SGD.*Did you mean 'lr'",
        id="unknown-arg",
    ),
    pytest.param(
        _then_train(
            lambda tr: tr.set_loader_hyperparameters(Hyperparameters().add_int("batchsize", 2, 8))
        ),
        "Did you mean 'batch_size'",
        id="loader-arg",
    ),
    pytest.param(
        _then_train(lambda tr: tr.prime_optimizer(lr=0.1)),
        "both in the search space and given to prime_optimizer",
        id="primed-and-searched",
    ),
    pytest.param(lambda tr: tr.get_model(), "call train", id="get-model"),
    pytest.param(
        lambda tr: tr.train(1, save_every=True, params=GOOD),
        "save_every must",
        id="save-True",
    ),
    pytest.param(
        lambda tr: tr.train(1, resume=5),
        "resume",
        id="resume-int",
    ),
    pytest.param(
        lambda tr: tr.train(1, params=GOOD, callbacks=[print]),
        "callbacks",
        id="callbacks",
    ),
    pytest.param(
        lambda tr: tr.train(1, params=GOOD, run_name="../escape"),
        "run_name",
        id="run-name-escapes",
    ),
    pytest.param(
        lambda tr: tr.train(1, params="best.json"),
        "params",
        id="params-path",
    ),
    pytest.param(
        _then_train(lambda tr: tr.set_model(TinyNet(4))),
        "class",
        id="model-instance",
    ),
    pytest.param(
        _then_train(lambda tr: tr.set_optimizer("SGD")),
        "SGD",
        id="optimizer-str",
    ),
    pytest.param(
        _then_train(lambda tr: tr.set_scheduler("StepLR")),
        "StepLR",
        id="scheduler-str",
    ),
    pytest.param(
        _then_train(lambda tr: tr.prime_model(hiden=8)),
        "Did you mean 'hidden'",
        id="primed-typo",
    ),
    pytest.param(
        _then_train(lambda tr: tr.prime_optimizer(weight_decay=-1.0)),
        "SGD.*Invalid weight_decay",
        id="optimizer-rejects",
    ),
    pytest.param(
        _then_train(lambda tr: tr.add_metric("f1", 5)),
        "callable",
        id="metric-int",
    ),
]


@pytest.mark.parametrize(("action", "match"), TRAIN_CASES)
def test_bad_trainer_use(tmp_path, action, match):
    tr = tiny(tmp_path)
    with pytest.raises(ConfigError, match=match):
        action(tr)
    assert nothing_in(tmp_path)


# -- hyp_opt options -------------------------------------------------------------------------

SEARCH_OPTION_CASES = [
    pytest.param({"epochs": 0}, "epochs must be an integer >= 1", id="epochs-0"),
    pytest.param({"iters": 2.5}, r"iters \(n_trials\) must be an integer", id="iters-float"),
    pytest.param({"n_workers": "2"}, "n_workers must be an integer >= 1", id="workers-str"),
    pytest.param({"timeout": 0}, "timeout must be a positive number", id="timeout-0"),
    pytest.param({"study_name": "  "}, "study_name must be a non-empty", id="name-blank"),
    pytest.param({"direction": "MAXIMIZE"}, "'minimize' or 'maximize'", id="direction-case"),
    pytest.param({"sampler": optuna.pruners.MedianPruner()}, "unknown sampler", id="sampler"),
    pytest.param({"pruner": "hyperbnd"}, "Did you mean 'hyperband'", id="pruner-typo"),
    pytest.param({"metric": "val/accuracy"}, "choose one of.*val/acc", id="metric"),
    pytest.param({"storage": 5}, "storage URL must be a non-empty string", id="storage-int"),
    pytest.param({"storage": "sqlite:///:memory:"}, "not shared", id="storage-memory"),
    pytest.param(
        {"timout": 10},
        "timout.*Did you mean 'timeout'",
        id="unknown-option",
    ),
    pytest.param(
        {"timeout": "10"},
        "timeout must be a positive number",
        id="timeout-str",
    ),
    pytest.param(
        {"metric": None},
        "metric",
        id="metric-None",
    ),
    pytest.param(
        {"seed": "x"},
        "seed must be an integer",
        id="seed-str",
    ),
    pytest.param(
        {"max_failures": 0},
        "max_failures must be",
        id="max-failures-0",
    ),
    pytest.param(
        {"keep_checkpoints": -1},
        "keep_checkpoints must be",
        id="keep-negative",
    ),
    pytest.param(
        {"heartbeat_interval": 0},
        "heartbeat_interval must be",
        id="heartbeat-0",
    ),
]


@pytest.mark.parametrize(("options", "match"), SEARCH_OPTION_CASES)
def test_bad_search_option(tmp_path, options, match):
    tr = tiny(tmp_path / "t")
    options = {"epochs": 1, "iters": 1, "storage": f"sqlite:///{tmp_path}/s.db", **options}
    with pytest.raises(ConfigError, match=match):
        tr.hyp_opt(**options)
    assert nothing_in(tmp_path)


# == 2. study files =========================================================================

STUDY_FILE_CASES = [
    pytest.param("missing.py", None, "does not exist", id="missing"),
    pytest.param("study.txt", "X = 1\n", "must be a Python file ending in .py", id="not-py"),
    pytest.param("syntax.py", "def make_trainer(:\n", "failed to import: SyntaxError", id="syn"),
    pytest.param(
        "imports.py",
        "import nonexistent_module_xyz\n",
        "failed to import: ModuleNotFoundError: No module named 'nonexistent_module_xyz'",
        id="import-error",
    ),
    pytest.param("binary.py", b"\x00\xff\xfe\x00", "failed to import", id="binary"),
    pytest.param("no_make.py", "X = 1\n", "must define make_trainer", id="no-make-trainer"),
    pytest.param("not_callable.py", "make_trainer = 5\n", "must define make_trainer", id="int"),
    pytest.param(
        "returns_none.py",
        "def make_trainer(**options):\n    return None\n",
        "must return a Trainer, got NoneType",
        id="returns-None",
    ),
    pytest.param(
        "returns_class.py",
        "from hpo_trainer import Trainer\n\ndef make_trainer(**options):\n    return Trainer\n",
        "must return a Trainer, got type",
        id="returns-class",
    ),
    pytest.param(
        "raises.py",
        "def make_trainer(**options):\n    raise RuntimeError('boom')\n",
        r"make_trainer\(\) in .*raises\.py.* failed: RuntimeError: boom",
        id="make-trainer-raises",
    ),
    pytest.param(
        "no_options.py",
        "def make_trainer():\n    return None\n",
        r"make_trainer\(\*\*options\)",
        id="no-options",
    ),
]


@pytest.mark.parametrize(("name", "source", "match"), STUDY_FILE_CASES)
def test_bad_study_file(tmp_path, name, source, match):
    path = tmp_path / "in" / name
    path.parent.mkdir()
    if isinstance(source, bytes):
        path.write_bytes(source)
    elif source is not None:
        path.write_text(source)
    with pytest.raises(ConfigError, match=match):
        load_trainer_from_file(path, runs_dir=tmp_path / "runs", quiet=True)
    assert not (tmp_path / "runs").exists()


def test_study_file_that_is_a_folder_or_has_bad_defaults(tmp_path):
    with pytest.raises(ConfigError, match="give the path to a .py file"):
        load_trainer_from_file(tmp_path)
    path = tmp_path / "bad_defaults.py"
    path.write_text("SEARCH = [20, 40]\n")
    with pytest.raises(ConfigError, match="SEARCH in study file .* must be a dict"):
        defaults(path, "SEARCH")


def test_a_hpo_trainer_error_in_make_trainer_passes_through(tmp_path):
    path = tmp_path / "bad_space.py"
    path.write_text(
        "from hpo_trainer import Hyperparameters\n\n"
        "def make_trainer(**options):\n"
        "    Hyperparameters().add_float('lr', 0.1, 0.001)\n"
    )
    with pytest.raises(SpaceError, match="low < high"):
        load_trainer_from_file(path)


# == 3. params files ========================================================================

DIR, MISSING = object(), object()

PARAMS_FILE_CASES = [
    pytest.param(MISSING, "does not exist; create it with `hpo-trainer export", id="missing"),
    pytest.param(DIR, "cannot be read: .*Is a directory", id="directory"),
    pytest.param('{"params": {"optimizer": ', "is not valid JSON", id="truncated"),
    pytest.param("", "is not valid JSON", id="empty"),
    pytest.param(bytes(range(256)), "cannot be read", id="binary"),
    pytest.param("\ufeff{}", "is not valid JSON.*BOM", id="bom"),
    pytest.param("[1, 2]", "must hold a JSON object", id="list"),
    pytest.param('"best"', "must hold a JSON object", id="string"),
    pytest.param('{"format": "hpo-trainer/params-v1"}', "has no 'params' object", id="no-params"),
    pytest.param('{"params": [0.01]}', "has no 'params' object", id="params-list"),
    pytest.param('{"lr": 0.01}', "write it as 'optimizer.lr'", id="flat-no-target"),
    pytest.param(
        '{"params": {"optimizer": 0.01}}',
        r"(?s)^(?!.*optimizer\.optimizer).*'optimizer'",
        id="target-not-object",
    ),
    pytest.param(
        "[" * 100_000 + "]" * 100_000,
        "is not valid JSON|too deeply nested",
        id="deep",
    ),
    pytest.param(
        '{"params": {"optimizer": {"lr": ' + "1" * 5000 + "}}}",
        "is not valid JSON|digits",
        id="huge-int",
    ),
]


@pytest.mark.parametrize(("content", "match"), PARAMS_FILE_CASES)
def test_unreadable_params_file(tmp_path, content, match):
    path = tmp_path / "best.json"
    if content is DIR:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not MISSING:
        path.write_text(content)
    with pytest.raises(ConfigError, match=match):
        export.read(path)


PARAMS_VALUE_CASES = [
    pytest.param({"optimizer": {"lr": 0.01}}, "model parameter 'hidden' is missing", id="missing"),
    pytest.param(
        {**GOOD, "optimizer": {"lr": "fast"}}, "'lr' must be a number, got 'fast'", id="str"
    ),
    pytest.param({**GOOD, "optimizer": {"lr": True}}, "must be a number, got True", id="bool"),
    pytest.param(
        {**GOOD, "modle": {"hidden": 4}}, "target 'modle' that has no search space", id="target"
    ),
    pytest.param(
        {**GOOD, "optimizer": {"lr": 5.0}}, r"'lr' must lie in \[0.001, 0.1\], got 5.0", id="big"
    ),
    pytest.param({**GOOD, "optimizer": {"lr": math.nan}}, "got nan", id="nan"),
    pytest.param(
        {**GOOD, "model": {"hidden": 5, "dropout": 0.1}},
        r"'hidden' must be one of \[4, 8\], got 5",
        id="not-a-choice",
    ),
    pytest.param(
        {**GOOD, "optimizer": {"lr": 0.01, "momentum": 0.9}},
        "'momentum' is not searched",
        id="not-searched",
    ),
    pytest.param(
        {"optimizer.lr": "0.01", "model.hidden": "4", "model.dropout": 0.1},
        "2 problems were found",
        id="all-listed",
    ),
    pytest.param(
        {**GOOD, "model": {"hidden": 4, "dropout": 0.15}},
        "step",
        id="off-grid",
    ),
]


@pytest.mark.parametrize(("params", "match"), PARAMS_VALUE_CASES)
def test_params_that_do_not_fit_the_space(tmp_path, params, match):
    path = tmp_path / "best.json"
    path.write_text(json.dumps({"format": export.FORMAT, "params": params}))
    tr = tiny(tmp_path)
    with pytest.raises(ConfigError, match=match):
        tr.train(1, params=export.read(path)["params"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json"]


# == 4. storage URLs ========================================================================

URL_CASES = [
    pytest.param("sqlite:/x", "needs three slashes", id="sqlite-one-slash"),
    pytest.param("sqlite://x.db", "needs three slashes", id="sqlite-two-slashes"),
    pytest.param("sqlite:///:memory:", "not shared between workers", id="memory"),
    pytest.param("sqlite:///", "give a file", id="sqlite-no-file"),
    pytest.param(f"mongodb://u:{SECRET}@h/db", "unsupported storage 'mongodb'", id="scheme"),
    pytest.param("", "must be a non-empty string", id="empty"),
    pytest.param("   ", "must be a non-empty string", id="blank"),
    pytest.param(None, "must be a non-empty string", id="None"),
    pytest.param("runs/studies.db", "look like sqlite:///runs/studies.db", id="bare-path"),
    pytest.param(
        "SQLite:///runs/studies.db",
        r"sqlite:///runs/studies\.db",
        id="scheme-case",
    ),
]


@pytest.mark.parametrize(("url", "match"), URL_CASES)
def test_bad_storage_url(url, match):
    with pytest.raises(StorageError, match=match) as err:
        parse_url(url)
    assert SECRET not in str(err.value)
    assert "sqlite:///SQLite:" not in str(err.value)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(CLOSED_PG, id="psycopg"),
        pytest.param(f"postgresql+psycopg://u:{SECRET}@127.0.0.1:1/db?sslmode=disable", id="q"),
        pytest.param(
            f"redis://:{SECRET}@127.0.0.1:1",
            id="redis",
        ),
    ],
)
def test_unreachable_server_is_named_and_the_password_masked(url):
    with pytest.raises(StorageError, match="cannot open the storage .*server is running") as err:
        open_storage(url)
    assert SECRET not in str(err.value) and "***" in str(err.value)


@pytest.mark.parametrize(
    "url",
    [f"postgresql+psycopg2://u:{SECRET}@127.0.0.1:1/db", f"mysql+pymysql://u:{SECRET}@h/db"],
    ids=["psycopg2", "pymysql"],
)
def test_missing_database_driver_says_what_to_install(url):
    driver = make_url(url).get_dialect().driver
    if installed(driver):
        pytest.skip(f"{driver} is installed here")
    with pytest.raises(StorageError, match=rf"is not installed \({driver}\).*pip install") as err:
        open_storage(url)
    assert "server is running" not in str(err.value)
    assert SECRET not in str(err.value)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        pytest.param(
            "journal:",
            "journal",
        ),
        pytest.param(
            "journal:{tmp}",
            "directory",
        ),
        pytest.param(
            "sqlite:///{tmp}",
            "directory",
        ),
        pytest.param(
            "sqlite:///{tmp}/garbage.db",
            "not a (SQLite )?database",
        ),
    ],
    ids=["journal-empty", "journal-dir", "sqlite-dir", "sqlite-garbage"],
)
def test_storage_path_that_is_not_a_storage(tmp_path, monkeypatch, url, match):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "garbage.db").write_bytes(b"garbage" * 100)
    with pytest.raises(StorageError, match=match):
        open_storage(url.format(tmp=tmp_path))


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(f"postgresql+psycopg://u:{SECRET}@h:5432/db", id="plain"),
        pytest.param(f"rediss://default:{SECRET}@h:6380", id="redis-user"),
        pytest.param(f"redis://:{SECRET}@h:6379/0", id="redis-no-user"),
        pytest.param(f"postgresql+psycopg://u:p@{SECRET}@h/db", id="at"),
        pytest.param(f"postgresql+psycopg://u:x/{SECRET}@h/db", id="slash"),
        pytest.param(f"postgresql+psycopg://u@h/db?password={SECRET}", id="query"),
    ],
)
def test_mask_url_hides_the_whole_password(url):
    assert SECRET not in mask_url(url) and "***" in mask_url(url)


def _study_db(path: Path) -> str:
    url = f"sqlite:///{path}"
    study = optuna.create_study(study_name="demo", storage=url)
    trial = study.ask()
    trial.suggest_float("optimizer.lr", 1e-5, 1e-1, log=True)
    study.tell(trial, 0.5)
    return url


def test_migrate_names_a_missing_study_and_refuses_to_clobber(tmp_path):
    url = _study_db(tmp_path / "a.db")
    with pytest.raises(ConfigError, match="no study named 'demp'.*Did you mean 'demo'"):
        migrate(url, f"sqlite:///{tmp_path}/b.db", study_name="demp")
    with pytest.raises(ConfigError, match="already exist.*nothing was copied"):
        migrate(url, url)


def test_migrating_a_storage_onto_itself_loses_nothing(tmp_path):
    url = _study_db(tmp_path / "a.db")
    try:
        with pytest.raises(ConfigError, match="same storage"):
            migrate(url, f"sqlite:///{tmp_path}/./a.db", overwrite=True)
    finally:
        assert len(optuna.load_study(study_name="demo", storage=url).trials) == 1


# == 5. the command line ====================================================================


def _inputs(tmp_path: Path) -> dict[str, str]:
    """Write the input files the command-line cases refer to as {name}."""
    src = tmp_path / "in"
    src.mkdir()
    files = {
        "syntax.py": "def make_trainer(:\n",
        "raises.py": "def make_trainer(**options):\n    raise RuntimeError('boom')\n",
        "list.json": "[1, 2]",
        "three.json": json.dumps(
            {
                "params": {
                    "optimizer": {"lr": "fast"},
                    "model": {"hidden_size": 17},
                    "modle": {"hidden_size": 16},
                }
            }
        ),
    }
    for name, text in files.items():
        (src / name).write_text(text)
    (src / "garbage.json").write_bytes(bytes(range(255, -1, -1)))
    (src / "adir").mkdir()
    paths = {Path(name).stem: str(src / name) for name in files}
    return {**paths, "garbage": str(src / "garbage.json"), "adir": str(src / "adir")}


def _tree(*roots: Path) -> list[tuple[str, int]]:
    return sorted(
        (str(p), p.stat().st_size if p.is_file() else -1) for r in roots for p in r.rglob("*")
    )


CLI_CASES = [
    pytest.param(["search", "{syntax}"], {1}, "failed to import: SyntaxError", id="syntax"),
    pytest.param(
        ["search", STUDY, "--seed", "abc"],
        {2},
        "argument --seed: must be a whole number, got 'abc'",
        id="seed",
    ),
    pytest.param(["search", STUDY, "--devices", "0,0"], {2}, "distinct GPU ids", id="devices"),
    pytest.param(
        ["search", STUDY, "--timeout", "-5"],
        {2},
        r"argument --timeout: must be a positive number of seconds, e\.g\. 3600, got '-5'",
        id="timeout",
    ),
    pytest.param(
        ["search", STUDY, "--storage", "sqlite:///:memory:"], {1}, "not shared", id="memory"
    ),
    pytest.param(
        ["search", STUDY, "--storage", f"mongodb://u:{SECRET}@h/db"],
        {1},
        r"unsupported storage 'mongodb' in 'mongodb://u:\*\*\*@h/db'",
        id="mongodb",
    ),
    pytest.param(
        ["search", STUDY, "--storage", CLOSED_PG],
        {1},
        r"cannot open the storage postgresql\+psycopg://u:\*\*\*@127.0.0.1:1/db: .*Connection "
        "refused.* Check that the server is running",
        id="postgres-closed-port",
    ),
    pytest.param(["train", STUDY, "--params", "{adir}"], {1}, "Is a directory", id="params-dir"),
    pytest.param(["train", STUDY, "--params", "{garbage}"], {1}, "cannot be read", id="binary"),
    pytest.param(["train", STUDY, "--params", "{list}"], {1}, "must hold a JSON obj", id="list"),
    pytest.param(
        ["train", STUDY, "--params", "{three}"],
        {1},
        "3 problems were found: - params name a target 'modle'.* - optimizer parameter 'lr' "
        r"must be a number.* - model parameter 'hidden_size' must be one of \[16, 32, 64, 128\]",
        id="three-problems",
    ),
    pytest.param(
        ["search", "{raises}"],
        {1},
        "failed: RuntimeError: boom",
        id="make-trainer-raises",
    ),
    pytest.param(
        ["search", STUDY, "--storage", "", "--trials", "1", "--epochs", "1"],
        {1, 2},
        "storage",
        id="storage-empty",
    ),
    pytest.param(
        ["export", "--storage", "{store}", "--out", "{adir}"],
        {1},
        "(?i)directory",
        id="export-out-dir",
    ),
    pytest.param(
        ["dashboard", "--storage", "{store}", "--port", "99999"],
        {2},
        "--port",
        id="dashboard-port",
    ),
]


def _hpo(args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [HPO, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow  # subprocess runs of the hpo-trainer command (about 3 s each)
@pytest.mark.parametrize(("args", "codes", "match"), CLI_CASES)
def test_command_line_bad_input(tmp_path, args, codes, match):
    names = _inputs(tmp_path)
    if any("{store}" in str(a) for a in args):
        (tmp_path / "db").mkdir()
        names["store"] = _study_db(tmp_path / "db" / "studies.db")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    before = _tree(cwd, tmp_path / "in")
    proc = _hpo([a.format(**names) if isinstance(a, str) else a for a in args], cwd)
    err = " ".join(proc.stderr.split())
    assert proc.returncode in codes, proc.stderr
    assert re.search(match, err), proc.stderr
    assert "Traceback" not in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    assert _tree(cwd, tmp_path / "in") == before, "a bad command wrote files"


@pytest.mark.slow  # a subprocess run of the hpo-trainer command
def test_postgresql_url_without_a_driver_suffix(tmp_path):
    proc = _hpo(["status", "--storage", f"postgresql://u:{SECRET}@127.0.0.1:1/db"], tmp_path)
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr and "postgresql://u:***@127.0.0.1:1/db" in err
    if installed(PG_DEFAULT_DRIVER):  # SQLAlchemy >= 2.1 picks psycopg (3) for postgresql://
        assert "Check that the server is running" in err
    else:
        assert f"not installed ({PG_DEFAULT_DRIVER})" in err and "pip install" in err
    assert not any(tmp_path.iterdir())


# == 6. properties ==========================================================================
#
# Each strategy draws a well-formed input most of the time (so that sampling and decoding
# are exercised) and anything at all otherwise (so that refusals are). derandomize=True keeps
# the examples the same from run to run.

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
JUNK = st.one_of(st.none(), st.booleans(), st.text(max_size=3), st.just(math.nan))
SANE_FLOAT = st.one_of(st.integers(-(10**6), 10**6), st.floats(-1e6, 1e6, allow_nan=False))
POSITIVE_FLOAT = st.floats(1e-6, 1e6)
ANY_NUMBER = st.one_of(st.integers(), st.floats())
SANE_INT = st.integers(-(2**62), 2**62)


KINDS = st.sampled_from(["linear", "log", "stepped", "anything"])
NOTHING = st.nothing()


@st.composite
def float_args(draw, number=SANE_FLOAT, step_junk=NOTHING):
    """(low, high, log, step) for add_float: well-formed three times in four."""
    kind = draw(KINDS)
    if kind == "anything":
        low, high = draw(st.one_of(number, JUNK)), draw(st.one_of(number, JUNK))
        return low, high, draw(st.booleans()), draw(st.one_of(st.none(), number, step_junk))
    low = draw(POSITIVE_FLOAT if kind == "log" else number)
    high = low + draw(st.floats(1e-3, 1e6))
    return low, high, kind == "log", draw(st.floats(1e-3, 1e3)) if kind == "stepped" else None


@st.composite
def int_args(draw):
    """(low, high, log, step) for add_int: well-formed three times in four."""
    kind = draw(KINDS)
    if kind == "anything":
        number = st.one_of(SANE_INT, st.floats(-10, 10), JUNK)
        step = st.one_of(st.integers(-3, 2**40), st.floats(-3, 3), JUNK)
        return draw(number), draw(number), draw(st.booleans()), draw(step)
    low = draw(st.integers(1, 2**62) if kind == "log" else SANE_INT)
    high = low + draw(st.integers(1, 2**62))
    return low, high, kind == "log", draw(st.integers(1, 2**40)) if kind == "stepped" else 1


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _range_refusal(low, high, log, step):
    """The refusal a range must get, as a regex with the bad value (``None``: accepted)."""
    for bound in (low, high):
        if not _is_number(bound) or (isinstance(bound, float) and math.isnan(bound)):
            return rf"range bounds must be numbers, got {re.escape(repr(bound))}"
    for bound in (low, high):
        if not _finite(bound):
            return rf"range bounds must be finite numbers, got {re.escape(repr(bound))}"
    if low >= high:
        return rf"a range needs low < high, got low={re.escape(repr(low))}, high="
    if not math.isfinite(float(high) - float(low)):
        return r"is wider than the largest float"
    if log and low <= 0:
        return rf"a log range must be above 0, got \[{re.escape(repr(low))}, "
    if step is None:
        return None
    if not _is_number(step):
        return rf"a step must be a positive number or None, got step={re.escape(repr(step))}"
    if not _finite(step):
        return rf"a step must be a finite positive number, got step={re.escape(repr(step))}"
    if step <= 0:
        return rf"a step must be positive, got step={re.escape(repr(step))}"
    if log:
        return r"cannot be both log and stepped"
    width = float(high) - float(low)
    if step > width * (1 + 1e-9):
        return rf"a step of {re.escape(repr(step))} is wider than the range"
    if width / step > 2**53:
        return rf"a step of {re.escape(repr(step))} cuts .* into more than 2\*\*53 points"
    return None


def _int_refusal(low, high, log, step):
    """The refusal an int range must get (see :func:`_range_refusal`)."""
    for bound in (low, high, step):
        if not isinstance(bound, int) or isinstance(bound, bool):
            return rf"an int range needs integer bounds and step, got {re.escape(repr(bound))}"
    for bound in (low, high):
        if abs(bound) > 2**53:
            return rf"int range bounds must lie within -2\*\*53 .. 2\*\*53 .* got {bound}"
    if log and step != 1:
        return rf"a log int range must have step 1, got step={step}"
    return _range_refusal(low, high, log, None if log else step)


def _refused_as_expected(exc: SpaceError, expected: str | None) -> None:
    assert expected is not None, f"a valid range was refused: {exc}"
    assert re.search(expected, str(exc)), f"expected /{expected}/, got: {exc}"


def _check_float_space(args, seed, *, tol):
    low, high, log, step = args
    expected = _range_refusal(low, high, log, step)
    try:
        hyp = Hyperparameters().add_float("x", low, high, log=log, step=step)
    except SpaceError as exc:
        _refused_as_expected(exc, expected)
        return
    assert expected is None, f"not refused, but should be: /{expected}/"
    for s in (seed, seed + 1):
        value = hyp.sample(seed=s)["x"]
        assert math.isfinite(value)
        slack = tol * max(1.0, abs(low), abs(high))
        assert low - slack <= value <= high + slack, (low, value, high)
        assert hyp.decode(hyp.encode({"x": value})) == {"x": value}


@PROPERTY
@given(args=float_args(), seed=st.integers(0, 2**32))
def test_float_space_is_refused_or_samples_inside(args, seed):
    _check_float_space(args, seed, tol=1e-9)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(args=float_args(ANY_NUMBER, JUNK), seed=st.integers(0, 2**32))
@example(args=(0.0, math.inf, False, None), seed=0)
@example(args=(-1e308, 1e308, False, None), seed=0)
@example(args=(0.0, 1.0, False, "0.1"), seed=0)
@example(args=(0.0, 1.0, False, math.nan), seed=0)
@example(args=(0.0, 1e300, False, 1e-300), seed=0)
@example(args=(0.0, 0.3, False, 0.1), seed=3)
@example(args=(8, 1e300, False, 2), seed=0)
def test_float_space_is_refused_or_samples_inside_for_any_input(args, seed):
    _check_float_space(args, seed, tol=0.0)


@PROPERTY
@given(args=int_args(), seed=st.integers(0, 2**32))
def test_int_space_is_refused_or_samples_inside(args, seed):
    low, high, log, step = args
    expected = _int_refusal(low, high, log, step)
    try:
        hyp = Hyperparameters().add_int("n", low, high, log=log, step=step)
    except SpaceError as exc:
        _refused_as_expected(exc, expected)
        return
    assert expected is None, f"not refused, but should be: /{expected}/"
    for s in (seed, seed + 1):
        value = hyp.sample(seed=s)["n"]
        assert type(value) is int and low <= value <= high and (value - low) % step == 0
        assert hyp.decode(hyp.encode({"n": value})) == {"n": value}


PRIMITIVE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=3),
    st.sampled_from([0, 1, 1.0, True, False, "1", "", -0.0, 0.0]),  # equal across types
)


@PROPERTY
@given(
    choices=st.one_of(
        st.lists(PRIMITIVE, min_size=1, max_size=6, unique_by=lambda v: v),
        st.lists(PRIMITIVE, min_size=1, max_size=6, unique_by=lambda v: v),
        st.lists(PRIMITIVE, max_size=6),  # duplicates and empty lists too
    ),
    seed=st.integers(0, 2**32),
)
def test_categorical_space_is_refused_or_round_trips(choices, seed):
    # choices that compare equal (1, 1.0, True) cannot be told apart once stored
    dupes = sorted({str(c) for c in choices if choices.count(c) > 1})
    try:
        hyp = Hyperparameters().add_categorical("c", choices)
    except SpaceError as exc:
        if not choices:
            assert "a categorical needs at least one choice, got an empty list" in str(exc)
        else:
            assert dupes, f"distinct choices {choices!r} were refused: {exc}"
            assert f"but {', '.join(dupes)} appears more than once" in str(exc)
        return
    assert choices and not dupes, f"{choices!r} should be refused"
    for s in (seed, seed + 1):
        value = hyp.sample(seed=s)["c"]
        assert any(value is c for c in choices)
        back = hyp.decode(hyp.encode({"c": value}))["c"]
        assert back == value and type(back) is type(value)


SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=4))
JSON = st.recursive(
    SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(max_size=4), inner, max_size=3),
    ),
    max_leaves=12,
)
TARGET = st.one_of(st.sampled_from(["optimizer", "model", "loader"]), st.text(max_size=4))
NAME = st.one_of(st.sampled_from(["lr", "hidden_size"]), st.text(max_size=4))
GROUPED = st.dictionaries(TARGET, st.dictionaries(NAME, SCALAR, max_size=3), max_size=3)
FLAT = st.dictionaries(st.builds("{}.{}".format, TARGET, NAME), SCALAR, max_size=3)
PARAMS = st.one_of(GROUPED, FLAT, st.dictionaries(st.text(max_size=4), JSON, max_size=3))
RECORD = st.one_of(
    st.fixed_dictionaries({"format": st.just(export.FORMAT), "params": PARAMS}),
    st.fixed_dictionaries({"params": st.one_of(PARAMS, JSON)}, optional={"format": JSON}),
    PARAMS,  # a bare {target: {name: value}} file
    JSON,
)
PARAMS_FILE_BYTES = st.one_of(
    RECORD.map(lambda v: json.dumps(v).encode()),
    RECORD.map(lambda v: json.dumps(v).encode()),
    RECORD.map(lambda v: json.dumps(v).encode()[:-1]),  # truncated
    st.binary(max_size=64),
)


def _refused_params_file_as_expected(exc: ConfigError, path: Path, content: bytes) -> None:
    """A refused params file is named, and the reason is the first thing wrong with it."""
    message = str(exc)
    if "has no target" in message or "must map names to values" in message:
        assert message.startswith("param"), message  # group_params names the parameter
        return
    assert f"params file {str(path)!r}" in message, message
    try:
        data = json.loads(content.decode())
    except UnicodeDecodeError:
        assert "cannot be read" in message, message
        return
    except (ValueError, RecursionError):
        assert "is not valid" in message and "JSON" in message, message
        return
    if not isinstance(data, dict):
        assert message.endswith("must hold a JSON object"), message
    else:
        params = data.get("params", data if "format" not in data else None)
        assert not isinstance(params, dict), f"a params object was refused: {message}"
        assert message.endswith("has no 'params' object"), message


@PROPERTY
@given(content=PARAMS_FILE_BYTES)
def test_params_file_reader_returns_grouped_params_or_a_config_error(tmp_path_factory, content):
    path = tmp_path_factory.getbasetemp() / "property-best.json"
    path.write_bytes(content)
    try:
        record = export.read(path)
    except ConfigError as exc:
        _refused_params_file_as_expected(exc, path, content)
        return
    assert isinstance(record["params"], dict)
    assert all(isinstance(v, dict) for v in record["params"].values())


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5])
def test_a_trainer_seed_out_of_range_is_refused(seed):
    import torch

    from hpo_trainer import Trainer

    with pytest.raises(ConfigError, match=r"seed must be an integer from 0 to 2\*\*32 - 1"):
        Trainer((torch.zeros(4, 2), torch.zeros(4)), seed=seed)
