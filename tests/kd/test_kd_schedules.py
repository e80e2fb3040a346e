"""KD weight schedules: endpoints and shapes."""

import pytest

from asr_kd.kd.schedules import build_schedule, progress


def test_self_kd_schedule_endpoints():
    f = build_schedule({"name": "self_kd", "t": 0.3})
    total = 1000
    assert f(0, total) == 0.0
    assert f(300, total) == pytest.approx(1.0)
    assert f(150, total) == pytest.approx(0.5)
    assert f(1000, total) == 1.0
    assert f(5000, total) == 1.0  # past the planned end: stays at 1
    values = [f(s, total) for s in range(0, 1001, 50)]
    assert values == sorted(values)  # monotone


def test_linear_step_constant():
    lin = build_schedule({"name": "linear", "start": 1.0, "end": 0.0, "begin": 0.5, "until": 1.0})
    assert lin(0, 100) == 1.0 and lin(50, 100) == 1.0 and lin(75, 100) == pytest.approx(0.5) and lin(100, 100) == 0.0
    st = build_schedule({"name": "step", "value": 2.0, "from": 0.5})
    assert st(49, 100) == 0.0 and st(50, 100) == 2.0
    assert build_schedule(None)(123, None) == 1.0
    assert build_schedule({"name": "constant", "value": 0.5})(0, None) == 0.5


def test_schedule_errors():
    with pytest.raises(ValueError, match="planned number of steps"):
        build_schedule({"name": "self_kd"})(10, None)
    with pytest.raises(ValueError, match="unknown KD schedule"):
        build_schedule({"name": "nope"})
    with pytest.raises(ValueError, match="bad arguments"):
        build_schedule({"name": "self_kd", "tt": 0.3})
    with pytest.raises(ValueError):
        build_schedule({"name": "self_kd", "t": 0.0})
    assert progress(5, 10) == 0.5
