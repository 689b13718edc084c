import math
import random

import optuna
import pytest
from torch.optim import SGD, Adam

from hpo_trainer import Hyperparameters, SpaceError


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
