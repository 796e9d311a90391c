"""Recorded benchmark runs: the --set options, the records written by --record, and reading them back."""

from __future__ import annotations

import json

import pytest

from gmcourse.bench import apply_overrides, parse_overrides
from gmcourse.bench.__main__ import main
from gmcourse.results import append_record, benchmark_table, load_records

DEFAULTS = {"hidden_sizes": (64, 64), "augment": True, "lr": 3e-3, "grad_clip": None, "batch_size": 256,
            "activation": "relu"}


def test_overrides_are_converted_to_the_type_of_each_default():
    overrides = parse_overrides(["hidden_sizes=128,32", "augment=false", "lr=1e-2", "grad_clip=5",
                                 "batch_size=512", "activation=tanh"])
    config = apply_overrides(DEFAULTS, overrides)
    assert config == {"hidden_sizes": (128, 32), "augment": False, "lr": 0.01, "grad_clip": 5.0,
                      "batch_size": 512, "activation": "tanh"}
    assert type(config["batch_size"]) is int and type(config["lr"]) is float
    assert apply_overrides(DEFAULTS, {"grad_clip": "none"})["grad_clip"] is None
    assert apply_overrides(DEFAULTS, None) == DEFAULTS


@pytest.mark.parametrize("pairs, message", [
    (["lr"], "NAME=VALUE"),
    (["=3"], "NAME=VALUE"),
])
def test_malformed_set_options_are_refused(pairs, message):
    with pytest.raises(ValueError, match=message):
        parse_overrides(pairs)


@pytest.mark.parametrize("overrides, message", [
    ({"learning_rate": "1"}, r"unknown option\(s\) \['learning_rate'\]; known: \['activation'"),
    ({"augment": "maybe"}, "expected true or false"),
    ({"batch_size": "1.5"}, "expected int"),
    ({"lr": "fast"}, "expected float"),
])
def test_bad_values_get_an_error_that_says_what_was_expected(overrides, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(DEFAULTS, overrides)


def test_records_round_trip_and_append(tmp_path):
    path = tmp_path / "sub" / "task.jsonl"
    append_record(path, {"task": "ising-ar", "seed": 0, "kl_nats": 0.5})
    append_record(path, {"task": "ising-ar", "seed": 1, "kl_nats": 0.25, "peer": {"kl_nats": 1.0}})
    records = load_records(path)
    assert [r["seed"] for r in records] == [0, 1]
    assert records[1]["peer"] == {"kl_nats": 1.0}
    assert path.read_text().count("\n") == 2


def test_a_corrupt_line_is_named_with_its_number(tmp_path):
    path = tmp_path / "task.jsonl"
    path.write_text(json.dumps({"task": "ising-ar", "seed": 0}) + "\n{half a record\n")
    with pytest.raises(ValueError, match=r"line 2: not a JSON record"):
        load_records(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match=r"line 1: expected a JSON object with a 'task' field"):
        load_records(path)
    with pytest.raises(FileNotFoundError, match="--record"):
        load_records(tmp_path / "missing.jsonl")


def test_a_table_takes_the_records_of_one_task():
    with pytest.raises(ValueError, match="one task"):
        benchmark_table([{"task": "ising-ar"}, {"task": "flow-8gaussians"}])
    with pytest.raises(ValueError, match="no records"):
        benchmark_table([])


def test_the_command_line_records_the_run_with_its_command(tmp_path, capsys):
    path = tmp_path / "runs.jsonl"
    argv = ["ising-ar", "--seconds", "0.5", "--seed", "3", "--no-progress", "--set", "hidden_sizes=16",
            "--record", str(path)]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (record,) = load_records(path)
    assert record["command"] == "python -m gmcourse.bench " + " ".join(argv)
    assert record["overrides"] == {"hidden_sizes": "16"} == printed["overrides"]
    assert record["seed"] == 3 and record["seconds_budget"] == 0.5
    assert record["kl_nats"] == printed["kl_nats"]  # the record holds exactly what was printed
    for field in ("date", "commit", "device", "device_name", "torch_threads", "torch_version", "load_average_1min"):
        assert field in record, field


def test_an_unknown_set_option_exits_2_and_records_nothing(tmp_path, capsys):
    path = tmp_path / "runs.jsonl"
    assert main(["ising-ar", "--seconds", "0.5", "--no-progress", "--set", "nonsense=1",
                 "--record", str(path)]) == 2
    assert "unknown option" in capsys.readouterr().err
    assert not path.exists()
