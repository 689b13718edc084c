import math
import pickle

import pytest
import torch
from torch import nn
from torch.optim import SGD
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import Dataset

from hpo_trainer import ConfigError, DataError, History, Hyperparameters, Trainer
from hpo_trainer.train import checkpoint

pytestmark = pytest.mark.fast

GOOD = {"optimizer.lr": 0.05, "model.hidden_size": 64}


def test_template_walkthrough_reaches_95_percent_test_accuracy(make_trainer):
    tr = make_trainer()
    history = tr.train(epochs=30, update_every=1, save_every=5, params=GOOD)
    assert len(history["train/loss"]) == 30
    assert history["test/acc"][-1] >= 0.95
    # the template's layout reads the same lists
    assert history["loss"]["val"] is history["val/loss"]
    assert set(history["loss"]) == {"train", "val", "test"}
    assert history["val/loss"][-1] < history["val/loss"][0]
    ckpts = sorted(p.name for p in (tr.run_dir / "checkpoints").glob("*.pt"))
    assert ckpts == [f"epoch-{e:04d}.pt" for e in (5, 10, 15, 20, 25, 30)]
    # get_model hands back the model as trained: the weights of the last epoch's checkpoint
    saved = checkpoint.load(tr.run_dir / "checkpoints" / "epoch-0030.pt")["model"]
    weights = tr.get_model().state_dict()
    assert weights.keys() == saved.keys()
    assert all(torch.equal(weights[name], saved[name]) for name in saved)


def test_each_run_gets_its_own_folder(make_trainer):
    tr = make_trainer()
    tr.train(epochs=1, params=GOOD)
    first = tr.run_dir
    tr.train(epochs=1, params=GOOD)
    assert tr.run_dir != first and first.exists() and any(first.iterdir())


def test_seeded_cpu_runs_repeat_exactly(make_trainer):
    a = make_trainer().train(epochs=3, params=GOOD)
    b = make_trainer().train(epochs=3, params=GOOD)
    assert a["val/loss"] == b["val/loss"]


def test_resume_ends_with_the_same_losses_as_an_uninterrupted_run(make_trainer, tmp_path):
    full = make_trainer(runs_dir=tmp_path / "a").train(epochs=6, save_every=2, params=GOOD)
    tr = make_trainer(runs_dir=tmp_path / "b")
    tr.train(epochs=6, save_every=2, params=GOOD)
    run_dir = tr.run_dir
    # simulate a crash after epoch 4: the later checkpoints never got written
    for name in ("epoch-0006.pt", "epoch-0006.pt.meta.json"):
        (run_dir / "checkpoints" / name).unlink()
    resumed = make_trainer(runs_dir=tmp_path / "b").train(epochs=6, save_every=2, resume=run_dir)
    assert resumed["val/loss"] == full["val/loss"]
    assert resumed["train/loss"] == full["train/loss"]


def test_resume_skips_a_damaged_checkpoint(make_trainer, caplog):
    tr = make_trainer()
    tr.train(epochs=4, save_every=2, params=GOOD)
    last = tr.run_dir / "checkpoints" / "epoch-0004.pt"
    last.write_bytes(last.read_bytes()[:100])  # truncated
    history = make_trainer().train(epochs=4, save_every=2, resume=tr.run_dir)
    assert len(history["val/loss"]) == 4
    assert "damaged" in caplog.text


class DictDigits(Dataset):
    """The template's per-item dataset: each item is {'x': ..., 'y': ...}."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class Net(nn.Module):
    def __init__(self, hidden_size=32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, hidden_size), nn.ReLU(), nn.Linear(hidden_size, 10))

    def forward(self, x):
        return self.net(x)


def _configure(tr):
    tr.set_model(Net)
    tr.set_criterion(nn.CrossEntropyLoss)
    tr.set_optimizer(SGD)
    tr.prime_optimizer(lr=0.1, momentum=0.9)
    return tr


def test_dict_items_through_a_dataloader_learn(digits, tmp_path):
    train, val = (DictDigits(*digits[s]) for s in ("train", "val"))
    tr = _configure(Trainer(train, val, runs_dir=tmp_path, quiet=True, seed=0))
    history = tr.train(epochs=5)
    assert history["val/acc"][-1] > 0.9


def test_tuple_of_numpy_arrays_takes_the_fast_path(digits, tmp_path):
    x, y = digits["train"]
    tr = _configure(
        Trainer(
            (x.numpy().astype("float64"), y.numpy()),
            digits["val"],
            runs_dir=tmp_path,
            quiet=True,
            seed=0,
        )
    )
    run = tr.build({}, epochs=1)
    from hpo_trainer.train.data import TensorBatches

    assert isinstance(run.train_batches, TensorBatches)
    assert tr.train(epochs=3)["val/acc"][-1] > 0.85


def test_scheduler_with_positional_argument_and_added_metric(digits, tmp_path):
    tr = _configure(
        Trainer(
            digits["train"], digits["val"], digits["test"], runs_dir=tmp_path, quiet=True, seed=0
        )
    )
    tr.set_scheduler(StepLR)
    tr.prime_scheduler(2, gamma=0.1)
    tr.add_metric("err", lambda p, t: (p.argmax(1) != t).float().mean())
    history = tr.train(epochs=4)
    assert history["train/lr"] == pytest.approx([0.1, 0.01, 0.01, 0.001])
    assert history["val/err"][-1] == pytest.approx(1 - history["val/acc"][-1])
    assert "test/err" in history


def test_searched_optimizer_class_builds_that_class(make_trainer):
    tr = make_trainer()
    opt = Hyperparameters()
    opt.choose_class([SGD, torch.optim.Adam])
    opt.set_range("lr", -4, -1)
    opt.add_float("momentum", 0.0, 0.9, when={"class": SGD})
    tr.set_hyperparameters(opt)
    tr.train(
        epochs=1, params={"optimizer": {"class": "Adam", "lr": 1e-3}, "model": {"hidden_size": 32}}
    )
    assert type(tr.optimizer) is torch.optim.Adam
    # with the searched arguments of that class only (SGD's momentum is not Adam's)
    assert tr.optimizer.defaults["lr"] == 1e-3 and "momentum" not in tr.optimizer.defaults


def test_grad_clip_and_override_pass_batch(digits, tmp_path):
    class Custom(Trainer):
        def pass_batch(self, batch):
            x, y = batch
            preds = self.model(x)
            return {
                "loss": self.criterion(preds, y),
                "preds": preds,
                "target": y,
                "mean_logit": preds.mean(),
            }

    tr = _configure(
        Custom(
            digits["train"], digits["val"], runs_dir=tmp_path, quiet=True, grad_clip=1.0, seed=0
        )
    )
    history = tr.train(epochs=2)
    assert len(history["train/mean_logit"]) == 2 and len(history["val/mean_logit"]) == 2


def test_nan_loss_is_a_clear_error(digits, tmp_path):
    x, y = digits["train"]
    x = x.clone()
    x[0, 0] = float("nan")
    tr = _configure(Trainer((x, y), digits["val"], runs_dir=tmp_path, quiet=True))
    with pytest.raises(FloatingPointError, match="non-finite.*lower the learning rate"):
        tr.train(epochs=1)


# -- bad input: each fails before any training starts, and nothing is written ------------


def _no_runs(tmp_path):
    runs = tmp_path / "runs"
    return not runs.exists() or not any(runs.iterdir())


def test_train_before_model_or_optimizer_is_set(digits, tmp_path):
    tr = Trainer(digits["train"], digits["val"], runs_dir=tmp_path / "runs")
    with pytest.raises(ConfigError) as err:
        tr.train(epochs=1)
    assert "no model is set" in str(err.value) and "no optimizer is set" in str(err.value)
    assert _no_runs(tmp_path)


def test_name_that_is_not_an_argument_of_the_optimizer(make_trainer, tmp_path):
    tr = make_trainer()
    hyp = Hyperparameters()
    hyp.set_range("lr", -5, -1)
    hyp.set_value("momentun", 0.9)
    tr.set_hyperparameters(hyp)
    with pytest.raises(
        ConfigError,
        match="'momentun' is not an argument of optimizer SGD.*Did you mean 'momentum'",
    ):
        tr.train(epochs=1, params={"optimizer.lr": 0.01, "model.hidden_size": 16})
    assert _no_runs(tmp_path)


def test_fixed_value_and_prime_keyword_cannot_both_be_used(make_trainer):
    tr = make_trainer()
    tr.prime_optimizer(momentum=0.5)
    with pytest.raises(ConfigError, match="both in the search space and given to prime_optimizer"):
        tr.train(epochs=1, params=GOOD)


def test_still_searched_parameters_need_params(make_trainer):
    with pytest.raises(ConfigError, match="still searched.*hyp_opt"):
        make_trainer().train(epochs=1)


def test_params_that_do_not_fit_the_space(make_trainer):
    with pytest.raises(ConfigError, match="'lr' must lie in"):
        make_trainer().train(epochs=1, params={"optimizer.lr": 3.0, "model.hidden_size": 64})


@pytest.mark.parametrize("epochs", [0, -1, 1.5])
def test_epochs_below_one(make_trainer, epochs):
    with pytest.raises(ConfigError, match="epochs must be an integer >= 1"):
        make_trainer().train(epochs=epochs, params=GOOD)


def test_pass_batch_without_a_loss(digits, tmp_path):
    class NoLoss(Trainer):
        def pass_batch(self, batch):
            return {"preds": self.model(batch[0])}

    tr = _configure(NoLoss(digits["train"], digits["val"], runs_dir=tmp_path, quiet=True))
    with pytest.raises(ConfigError, match="pass_batch must return a dict with a 'loss'"):
        tr.train(epochs=1)


def test_dataset_item_neither_dict_nor_tuple(digits):
    class Bare(Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return torch.zeros(4)

    with pytest.raises(DataError, match="items of the train set must be dicts.*or tuples"):
        Trainer(Bare(), digits["val"])


def test_mismatched_in_memory_lengths():
    with pytest.raises(DataError, match="one length"):
        Trainer((torch.zeros(5, 2), torch.zeros(4)))


def test_bad_device_name():
    with pytest.raises(ConfigError, match="device must be"):
        Trainer((torch.zeros(5, 2), torch.zeros(5)), device="gpu0")


def test_accuracy_is_only_reported_for_classification(tmp_path):
    x = torch.randn(64, 3)
    y = x.sum(1, keepdim=True)
    tr = Trainer((x, y), (x, y), runs_dir=tmp_path, quiet=True, seed=0)
    tr.set_model(nn.Linear)
    tr.prime_model(3, 1)
    tr.set_criterion(nn.MSELoss)
    tr.set_optimizer(SGD)
    tr.prime_optimizer(lr=0.1)
    history = tr.train(epochs=5)
    assert "val/acc" not in history and math.isfinite(history["val/loss"][-1])


def test_built_state_is_kept_apart_from_the_configuration(make_trainer):
    tr = make_trainer()
    assert tr.last_run is None and tr.model is None and tr.optimizer is None
    assert tr.criterion is None and tr.scheduler is None
    assert isinstance(tr.history, History) and not tr.history
    with pytest.raises(AttributeError):
        tr.model = nn.Linear(2, 2)
    with pytest.raises(AttributeError):
        tr.run_dir = "elsewhere"  # read from the state: set by train, never by hand
    history = tr.train(epochs=2, params=GOOD)
    assert tr.history is history is tr.last_run.state.history
    assert tr.model is tr.last_run.state.model and isinstance(tr.scheduler, StepLR)
    assert tr.optimizer is tr.last_run.state.optimizer
    assert isinstance(tr.criterion, nn.CrossEntropyLoss)
    copy = pickle.loads(pickle.dumps(tr))
    assert copy.last_run is None and copy.model is None and not copy.history
    assert copy.spaces.keys() == tr.spaces.keys() and tr.model is not None


# -- configuration apart from what calls set ------------------------------------------------


def _configuration(tr):
    """Everything on ``tr`` but ``state_``: each attribute's object, and all of it pickled."""
    config = {k: v for k, v in vars(tr).items() if k != "state_"}
    return {k: id(v) for k, v in config.items()}, pickle.dumps(config)


@pytest.mark.slow  # a real search (two one-epoch trials), then a run
def test_hyp_opt_and_train_leave_the_configuration_as_it_was(make_trainer, tmp_path):
    tr = make_trainer()
    before = _configuration(tr)
    tr.hyp_opt(epochs=1, iters=2, storage=f"sqlite:///{tmp_path}/s.db", pruner="none", seed=0)
    assert _configuration(tr) == before
    assert set(tr.state_.best) == {"optimizer", "model"}
    assert tr.state_.best_trial["epochs"] == 1 and tr.run_dir is None
    history = tr.train(epochs=1)  # the best trial's values, from the state
    assert _configuration(tr) == before
    assert tr.history is history and (tr.run_dir / "summary.json").exists()
    assert tr.run_dir == tr.state_.run_dir and tr.summary is tr.state_.summary
    copy = pickle.loads(pickle.dumps(tr))  # the best trial travels, the built run does not
    assert copy.state_.best == tr.state_.best and copy.last_run is None


def test_train_leaves_the_configuration_as_it_was(make_trainer):
    tr = make_trainer()
    before = _configuration(tr)
    tr.train(epochs=1, params=GOOD)
    assert _configuration(tr) == before
    assert tr.summary["epochs"] == 1 and tr.run_dir.is_dir()


def test_pass_batch_before_any_run_builds_one(digits, tmp_path):
    tr = _configure(Trainer(digits["train"], digits["val"], runs_dir=tmp_path, seed=0))
    x, y = digits["val"]
    out = tr.pass_batch((x[:8], y[:8]))  # no fit, train or build before
    assert out["preds"].shape == (8, 10) and torch.isfinite(out["loss"])
    assert tr.model is tr.last_run.state.model and not tr.history
    assert not any(tmp_path.iterdir())  # building a run writes nothing


def test_pass_batch_before_any_run_with_searched_values_says_what_to_give(make_trainer, digits):
    tr = make_trainer()
    x, y = digits["val"]
    with pytest.raises(ConfigError, match=r"still searched.*pass params=\{\.\.\.\}"):
        tr.pass_batch((x[:4], y[:4]))
    tr.initialize(params=GOOD)
    assert tr.pass_batch((x[:4], y[:4]))["preds"].shape == (4, 10)
    assert tr.model.h.out_features == GOOD["model.hidden_size"]
