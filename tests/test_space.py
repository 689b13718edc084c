import math
import pickle
import random

import numpy as np
import optuna
import pytest
from torch.optim import SGD, Adam

from hpo_trainer import EPOCHS, ConfigError, Hyperparameters, SpaceError
from hpo_trainer.space.epochs import resolve_epochs

pytestmark = pytest.mark.fast


def test_template_api_set_range_is_base10_exponents_and_set_value_is_fixed():
    hyp = Hyperparameters()
    hyp.register(["lr", "momentum"])
    hyp.set_range("lr", -5, -1)
    hyp.set_value("momentum", 0.9)
    draws = [hyp.sample(random.Random(i)) for i in range(300)]
    lrs = [d["lr"] for d in draws]
    assert all(1e-5 <= lr <= 1e-1 for lr in lrs)
    # log-uniform: about half of the draws fall below 10**-3, the middle exponent
    below = sum(lr < 1e-3 for lr in lrs) / len(lrs)
    assert 0.4 < below < 0.6
    assert {d["momentum"] for d in draws} == {0.9}
    assert list(hyp.searched) == ["lr"]
    assert hyp.fixed == {"momentum": 0.9}


def test_set_value_stops_searching_and_activate_resumes():
    hyp = Hyperparameters()
    hyp.set_range("lr", -3, -1)
    hyp.set_value("lr", 0.01)
    assert hyp.sample(seed=0) == {"lr": 0.01}
    hyp.activate("lr")
    assert hyp.sample(seed=0)["lr"] != 0.01
    hyp.deactivate("lr")
    assert hyp.sample(seed=0) == {"lr": 0.01}


def test_deactivated_without_value_is_left_to_the_target_default():
    hyp = Hyperparameters()
    hyp.add_float("weight_decay", 0.0, 0.1)
    hyp.deactivate("weight_decay")
    assert hyp.sample(seed=0) == {}


def test_typed_dimensions_sample_within_bounds():
    hyp = Hyperparameters("model")
    hyp.add_float("dropout", 0.0, 0.5, step=0.1)
    hyp.add_int("layers", 1, 4)
    hyp.add_int("width", 8, 256, log=True)
    hyp.add_int("even", 2, 10, step=2)
    hyp.add_categorical("act", ["relu", "tanh"])
    for i in range(100):
        v = hyp.sample(seed=i)
        assert any(math.isclose(v["dropout"], k / 10) for k in range(6))
        assert 1 <= v["layers"] <= 4 and 8 <= v["width"] <= 256 and v["even"] % 2 == 0
        assert v["act"] in ("relu", "tanh")


def test_class_choice_with_conditional_parameter_in_optuna():
    hyp = Hyperparameters()
    hyp.choose_class([SGD, Adam])
    hyp.set_range("lr", -4, -1)
    hyp.add_float("momentum", 0.0, 0.99, when={"class": SGD})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(20):
        trial = study.ask()
        values = hyp.suggest(trial)
        seen.add(values["class"])
        assert ("momentum" in values) == (values["class"] is SGD)
        assert ("optimizer.momentum" in trial.params) == (values["class"] is SGD)
        assert trial.params["optimizer.class"] in ("SGD", "Adam")  # stored by label
        study.tell(trial, 0.0)
    assert seen == {SGD, Adam}


def test_decode_round_trips_and_reports_every_bad_value():
    hyp = Hyperparameters()
    hyp.choose_class([SGD, Adam])
    hyp.set_range("lr", -4, -1)
    hyp.add_int("steps", 1, 5)
    values = hyp.decode({"class": "Adam", "lr": 0.01, "steps": 3})
    assert values == {"class": Adam, "lr": 0.01, "steps": 3}
    assert hyp.encode(values) == {"class": "Adam", "lr": 0.01, "steps": 3}
    with pytest.raises(SpaceError) as err:
        hyp.decode({"class": "RMSprop", "lr": 5.0, "stepz": 2})
    msg = str(err.value)
    assert "'class' must be one of ['SGD', 'Adam']" in msg
    assert "'lr' must lie in" in msg
    assert "'steps' is missing" in msg
    assert "Did you mean 'steps'?" in msg


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda h: h.set_range("lr", -1, -5), "low < high"),
        (lambda h: h.add_float("lr", 0.1, 0.1), "low < high"),
        (lambda h: h.add_float("lr", 0.0, 1.0, log=True), "log range must be above 0"),
        (lambda h: h.add_float("lr", -1.0, 1.0, log=True), "log range must be above 0"),
        (lambda h: h.add_categorical("act", []), "at least one choice"),
        (lambda h: h.add_categorical("act", "relu"), "must be a list"),
        (lambda h: h.add_categorical("act", [1, 1]), "distinct"),
        (lambda h: h.add_int("n", 1.5, 4), "integer bounds"),
        (lambda h: h.add_float("x", 0.0, 1.0, step=-0.1), "step must be positive"),
        (lambda h: h.activate("nope"), "not registered"),
        (lambda h: h.register("not a name"), "Python identifier"),
    ],
)
def test_bad_dimensions_fail_with_a_clear_message(call, match):
    with pytest.raises(SpaceError, match=match):
        call(Hyperparameters())


def test_activate_without_range_says_how_to_fix():
    hyp = Hyperparameters()
    hyp.set_value("momentum", 0.9)
    with pytest.raises(SpaceError, match=r"set_range\('momentum'"):
        hyp.activate("momentum")


def test_unknown_target_suggests_the_right_one():
    with pytest.raises(SpaceError, match="Did you mean 'optimizer'"):
        Hyperparameters("optimiser")


def test_validate_collects_all_problems():
    hyp = Hyperparameters()
    hyp.register("lr")
    hyp.add_float("momentum", 0.0, 1.0, when={"klass": SGD})
    with pytest.raises(SpaceError) as err:
        hyp.validate()
    assert "2 problems" in str(err.value)
    assert "neither a range nor a value" in str(err.value)
    assert "depends on 'klass'" in str(err.value)


def test_condition_cycle_is_reported():
    hyp = Hyperparameters("model")
    hyp.add_categorical("a", ["x", "y"], when={"b": "x"})
    hyp.add_categorical("b", ["x", "y"], when={"a": "x"})
    with pytest.raises(SpaceError, match="cycle"):
        hyp.sample(seed=0)


def test_decode_rejects_a_parameter_whose_condition_does_not_hold():
    hyp = Hyperparameters()
    hyp.choose_class([SGD, Adam])
    hyp.set_range("lr", -4, -1)
    hyp.add_float("momentum", 0.0, 0.99, when={"class": SGD})
    assert hyp.decode({"class": "SGD", "lr": 0.01, "momentum": 0.5})["momentum"] == 0.5
    with pytest.raises(SpaceError, match="'momentum' only applies when class is SGD"):
        hyp.decode({"class": "Adam", "lr": 0.01, "momentum": 0.5})


# -- conditional fixed values ------------------------------------------------------------


def _sgd_or_adam():
    hyp = Hyperparameters()
    hyp.choose_class([SGD, Adam])
    hyp.set_range("lr", -4, -1)
    hyp.set_value("momentum", 0.9, when={"class": SGD})
    return hyp


def test_conditional_fixed_value_applies_only_when_its_condition_holds():
    hyp = _sgd_or_adam()
    assert hyp.conditions("momentum") == {"class": ("SGD",)}
    assert hyp.fixed == {"momentum": 0.9}
    draws = [hyp.sample(seed=i) for i in range(40)]
    assert {d["class"] for d in draws} == {SGD, Adam}
    assert all(("momentum" in d) == (d["class"] is SGD) for d in draws)
    assert all(d["momentum"] == 0.9 for d in draws if d["class"] is SGD)
    assert hyp.decode({"class": "SGD", "lr": 0.01}) == {"class": SGD, "lr": 0.01, "momentum": 0.9}
    assert hyp.decode({"class": "Adam", "lr": 0.01}) == {"class": Adam, "lr": 0.01}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        trial = study.ask()
        values = hyp.suggest(trial)
        assert ("momentum" in values) == (values["class"] is SGD)
        assert set(trial.params) == {"optimizer.class", "optimizer.lr"}  # fixed: not sent
        study.tell(trial, 0.0)


def test_a_range_and_a_fixed_value_keep_their_own_conditions():
    hyp = Hyperparameters()
    hyp.choose_class([SGD, Adam])
    hyp.add_float("momentum", 0.0, 0.99, when={"class": SGD})
    hyp.set_value("momentum", 0.5)  # no condition: the range's does not carry over
    assert hyp.conditions("momentum") == {}
    assert hyp.decode({"class": "Adam"}) == {"class": Adam, "momentum": 0.5}
    hyp.activate("momentum")
    assert hyp.conditions("momentum") == {"class": ("SGD",)}
    assert hyp.decode({"class": "Adam"}) == {"class": Adam}
    hyp.deactivate("momentum")
    assert hyp.conditions("momentum") == {}


@pytest.mark.parametrize(
    ("when", "match"),
    [
        ({"klass": SGD}, "depends on 'klass', which is not in this space. Did you mean 'class'"),
        ({"class": "RMSprop"}, "depends on 'class' being 'RMSprop', which is not one of"),
        ({"momentum": 0.9}, "'momentum' cannot depend on itself"),
        ("class", "when must be a dict"),
    ],
)
def test_bad_condition_of_a_fixed_value(when, match):
    with pytest.raises(SpaceError, match=match):
        hyp = Hyperparameters().choose_class([SGD, Adam])
        hyp.set_value("momentum", 0.9, when=when)
        hyp.validate()


# -- EPOCHS: the run's epoch count ---------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "text", "at_8"),
    [
        (EPOCHS, "EPOCHS", 8),
        (EPOCHS * 2, "EPOCHS * 2", 16),
        (2 * EPOCHS, "EPOCHS * 2", 16),
        (EPOCHS // 3, "EPOCHS // 3", 2),
        (EPOCHS - 1, "EPOCHS - 1", 7),
        (1 + EPOCHS, "EPOCHS + 1", 9),
        (10 - EPOCHS, "10 - EPOCHS", 2),
        ((EPOCHS - 2) // 2, "(EPOCHS - 2) // 2", 3),
        (EPOCHS * 3 // 4, "EPOCHS * 3 // 4", 6),
        (EPOCHS * 0.5, "EPOCHS * 0.5", 4),
    ],
)
def test_epochs_expressions_read_as_written_and_resolve(expr, text, at_8):
    assert repr(expr) == text
    value = resolve_epochs(expr, 8, "T_max")
    assert value == at_8 and type(value) is int
    assert pickle.loads(pickle.dumps(expr)) == expr


def test_epochs_inside_lists_and_dicts_resolve_and_plain_values_pass_through():
    milestones = [EPOCHS // 2, EPOCHS - 1]
    assert resolve_epochs(milestones, 10, "milestones") == [5, 9]
    assert resolve_epochs({"a": (EPOCHS, 3)}, 4, "x") == {"a": (4, 3)}
    plain = [1, 2]
    assert resolve_epochs(plain, 10, "x") is plain
    assert resolve_epochs(0.9, None, "x") == 0.9


@pytest.mark.parametrize(
    ("expr", "epochs", "match"),
    [
        (
            EPOCHS - 3,
            3,
            r"T_max is EPOCHS - 3, which must be a positive integer, but for a run "
            r"of 3 epochs it is 0; train more epochs",
        ),
        (EPOCHS // 4, 3, r"EPOCHS // 4.*for a run of 3 epochs it is 0"),
        (EPOCHS * 0.5, 5, r"EPOCHS \* 0.5.*for a run of 5 epochs it is 2.5; use //"),
        (EPOCHS, None, r"needs the epoch count of the run.*pass epochs=N"),
    ],
)
def test_epochs_that_resolve_badly_say_expression_epochs_and_result(expr, epochs, match):
    with pytest.raises(ConfigError, match=match):
        resolve_epochs(expr, epochs, "T_max")


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: EPOCHS / 2, SpaceError, r"divide with //, e.g. EPOCHS // 2"),
        (lambda: EPOCHS // 0, SpaceError, "divides by zero"),
        (lambda: EPOCHS * math.inf, SpaceError, "takes finite numbers, got inf"),
        (lambda: EPOCHS + "1", TypeError, "unsupported operand"),
        (lambda: EPOCHS * EPOCHS, TypeError, "unsupported operand"),
    ],
)
def test_epochs_arithmetic_that_cannot_work_is_refused_at_once(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_epochs_arithmetic_takes_numpy_numbers_as_plain_ones():
    expr = EPOCHS * np.int64(3) // np.float64(2.0)
    assert repr(expr) == "EPOCHS * 3 // 2.0"
    assert resolve_epochs(expr, 4, "T_max") == 6


def test_epochs_as_a_fixed_value_never_reaches_optuna_or_params():
    hyp = Hyperparameters("scheduler")
    hyp.add_float("eta_min", 0.0, 0.01)
    hyp.set_value("T_max", EPOCHS // 2)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    values = hyp.suggest(trial)
    assert values["T_max"] == EPOCHS // 2
    assert set(trial.params) == {"scheduler.eta_min"}
    stored = hyp.encode(values)
    assert set(stored) == {"eta_min"}
    assert hyp.decode(stored) == values
    assert hyp.sample(seed=0)["T_max"] == EPOCHS // 2


def test_epochs_expressions_as_categorical_choices_round_trip_by_label():
    hyp = Hyperparameters("scheduler")
    hyp.add_categorical("T_max", [EPOCHS, EPOCHS // 2])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(10):
        trial = study.ask()
        value = hyp.suggest(trial)["T_max"]
        assert trial.params["scheduler.T_max"] == repr(value)  # a plain string for Optuna
        assert hyp.decode(dict(hyp.encode({"T_max": value}))) == {"T_max": value}
        seen.add(resolve_epochs(value, 10, "T_max"))
        study.tell(trial, 0.0)
    assert seen == {10, 5}
