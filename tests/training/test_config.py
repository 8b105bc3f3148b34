import dataclasses

import pytest

from keras_robust.cli.checks import training_config_from
from keras_robust.cli.parser import build_parser
from keras_robust.training.config import TrainingConfig


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"strategy": "tpu"}, "Received: strategy='tpu'"),
        ({"epochs": 0}, "Received: epochs=0"),
        ({"adversarial_training": "fgsm"}, "Received: adversarial_training='fgsm'"),
        ({"adversarial_training": ["l2min"]}, r"Received: adversarial_training=\['l2min'\]"),
        ({"precision": ["bf16"]}, r"must be one of \('fp32', 'bf16', 'fp16'\). Received: precision=\['bf16'\]"),
        ({"depth": 10}, "Received: depth=10"),
        ({"jit_compile": "yes"}, "Received: jit_compile='yes'"),
        ({"learning_rate": -1.0}, "Received: learning_rate=-1.0"),
        ({"learning_rate": float("nan")}, "`learning_rate` must be a finite number > 0"),
        ({"momentum": 1.5}, "Received: momentum=1.5"),
        ({"weight_decay": float("inf")}, "Received: weight_decay=inf"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainingConfig(**kwargs)



@pytest.mark.parametrize("given, mode", [(None, None), (False, None), (True, "bounded"),
                                         ("bounded", "bounded"), ("l2min", "l2min")])
def test_adversarial_training_is_one_mode_as_robust_model_takes_it(given, mode):
    assert TrainingConfig(adversarial_training=given).adversarial_training == mode


def parse_train(*flags):
    parser = build_parser()
    return parser.parse_args(["train", "--data", "d", "--out", "o", *flags])


def test_every_field_is_a_train_flag_with_the_fields_default():
    args = parse_train()
    for field in dataclasses.fields(TrainingConfig):
        assert getattr(args, field.name) == field.default, field.name
    assert training_config_from(args) == TrainingConfig()


def test_train_flags_set_every_field():
    args = parse_train("--recipe", "cifar", "--depth", "20", "--robust", "--adversarial-training", "l2min",
                       "--epochs", "3", "--batch-size", "16", "--lr", "0.05", "--momentum", "0.8",
                       "--weight-decay", "0.001", "--strategy", "mirrored", "--jit-compile", "off",
                       "--precision", "bf16", "--seed", "7")
    assert training_config_from(args) == TrainingConfig(
        recipe="cifar", depth=20, robust=True, adversarial_training="l2min", epochs=3, batch_size=16,
        learning_rate=0.05, momentum=0.8, weight_decay=0.001, strategy="mirrored", jit_compile="off",
        precision="bf16", seed=7)


@pytest.mark.parametrize("flags, mode", [
    ((), None),
    (("--adversarial-training",), "bounded"),
    (("--adversarial-training", "bounded"), "bounded"),
    (("--adversarial-training", "l2min"), "l2min"),
    (("--adversarial-training", "--l2-min"), "l2min"),
    (("--l2-min", "--adversarial-training"), "l2min"),
    (("--l2-min",), "l2min"),
])
def test_adversarial_training_flags(flags, mode):
    assert training_config_from(parse_train(*flags)).adversarial_training == mode


def test_contradicting_attack_flags_are_refused():
    with pytest.raises(ValueError, match="--l2-min asks for the l2min attack, --adversarial-training for bounded"):
        training_config_from(parse_train("--l2-min", "--adversarial-training", "bounded"))


def test_an_unknown_adversarial_mode_is_an_argument_error(capsys):
    with pytest.raises(SystemExit):
        parse_train("--adversarial-training", "fgsm")
    assert "invalid choice: 'fgsm'" in capsys.readouterr().err
