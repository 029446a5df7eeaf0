"""Tests of posenc_lib.timing: how often and in which order the functions run, what is returned, bad input.

Timing values depend on the machine, so the tests check behaviour: call counts and order, the statistic
applied to samples from a controlled clock, positive results, and errors that name the argument.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import pytest
import torch

from posenc_lib import timing
from posenc_lib.timing import synchronize, time_calls


def _recorder(log: list[str], name: str) -> Callable[[], None]:
    """A function of no arguments that appends ``name`` to ``log`` when called."""

    def run() -> None:
        log.append(name)

    return run


@pytest.mark.parametrize(("rounds", "calls", "warmup"), [(1, 1, 0), (3, 2, 1), (5, 4, 2)])
def test_each_function_is_called_warmup_plus_rounds_times_calls(rounds: int, calls: int, warmup: int) -> None:
    log: list[str] = []
    functions = {name: _recorder(log, name) for name in ("a", "b", "c")}
    time_calls(functions, rounds=rounds, calls=calls, warmup=warmup)
    for name in functions:
        assert log.count(name) == warmup + rounds * calls


def test_functions_take_turns_round_by_round() -> None:
    log: list[str] = []
    time_calls({"a": _recorder(log, "a"), "b": _recorder(log, "b")}, rounds=3, calls=2, warmup=1)
    # warm-up: one call each in turn; then each round: a's two calls, then b's two calls
    assert log == ["a", "b"] + ["a", "a", "b", "b"] * 3


def test_returns_positive_seconds_per_call_in_the_order_given() -> None:
    result = time_calls(
        {"sum": lambda: sum(range(100)), "tensor": lambda: torch.ones(8).sum()}, rounds=3, calls=2
    )
    assert list(result) == ["sum", "tensor"]
    assert all(isinstance(seconds, float) and seconds > 0 for seconds in result.values())


class _FakeClock:
    """A clock that advances only when a timed function runs, by the next of its planned durations."""

    def __init__(self, durations: list[float]) -> None:
        self.now = 0.0
        self.durations = list(durations)

    def perf_counter(self) -> float:
        return self.now

    def run(self) -> None:
        self.now += self.durations.pop(0)


@pytest.mark.parametrize("statistic", ["min", "median"])
def test_statistic_summarises_the_samples_divided_by_calls(
    monkeypatch: pytest.MonkeyPatch, statistic: str
) -> None:
    per_round = [0.5, 0.2, 0.9, 0.4, 0.3]  # seconds of the two calls of each round, one call each
    clock = _FakeClock([seconds / 2 for seconds in per_round for _ in range(2)])
    monkeypatch.setattr(timing.time, "perf_counter", clock.perf_counter)
    result = time_calls({"f": clock.run}, rounds=5, calls=2, warmup=0, statistic=statistic)
    expected = {"min": min(per_round), "median": statistics.median(per_round)}[statistic] / 2
    assert result["f"] == pytest.approx(expected)
    assert clock.durations == []  # every planned call ran, no more


def test_a_clock_that_does_not_advance_still_gives_a_positive_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timing.time, "perf_counter", lambda: 1.0)
    assert time_calls({"f": lambda: None}, rounds=2)["f"] > 0


def test_synchronize_on_the_cpu_returns_at_once() -> None:
    for device in (None, "cpu", torch.device("cpu")):
        assert synchronize(device) is None
    log: list[str] = []
    assert time_calls({"f": _recorder(log, "f")}, rounds=2, device="cpu")["f"] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_synchronize_waits_for_cuda() -> None:
    x = torch.randn(256, 256, device="cuda")
    (x @ x).sum()
    synchronize("cuda")
    assert time_calls({"matmul": lambda: x @ x}, rounds=2, device=x.device)["matmul"] > 0


@pytest.mark.parametrize(
    ("functions", "error", "message"),
    [
        ([lambda: None], TypeError, "functions must be a mapping"),
        ({}, ValueError, "functions must hold at least one"),
        ({"f": 3}, TypeError, r"functions\['f'\] must be callable"),
        ({1: lambda: None}, TypeError, "functions must have string names"),
    ],
)
def test_rejects_bad_functions(functions: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        time_calls(functions)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("keyword", "value", "error", "message"),
    [
        ("rounds", 0, ValueError, "rounds must be a positive integer"),
        ("rounds", 2.5, TypeError, "rounds must be a positive integer"),
        ("calls", -1, ValueError, "calls must be a positive integer"),
        ("calls", True, TypeError, "calls must be a positive integer"),
        ("warmup", -1, ValueError, "warmup must be a non-negative integer"),
        ("statistic", "mean", ValueError, "statistic must be one of 'min', 'median'"),
        ("device", "abacus", ValueError, "device must name a device"),
        ("device", 0, TypeError, "device must be a torch.device"),
    ],
)
def test_rejects_bad_settings(keyword: str, value: object, error: type[Exception], message: str) -> None:
    log: list[str] = []
    with pytest.raises(error, match=message):
        time_calls({"f": _recorder(log, "f")}, **{keyword: value})  # type: ignore[arg-type]
    assert log == []  # nothing runs before the arguments are checked


@pytest.mark.parametrize(("device", "error"), [("abacus", ValueError), (3.0, TypeError)])
def test_synchronize_rejects_bad_devices(device: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="device must"):
        synchronize(device)  # type: ignore[arg-type]
