"""The benchmark's pure parts (benchmarks/figures.py): medians, ratios, scaling, targets, profile."""

import importlib.util
from datetime import datetime, timedelta, timezone

import pytest

from provisioner.config import REPO_ROOT

_spec = importlib.util.spec_from_file_location("bench_figures", REPO_ROOT / "benchmarks" / "figures.py")
figures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(figures)

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=timezone.utc)


def at(seconds):
    return T0 + timedelta(seconds=seconds)


def test_median_of_odd_and_even_counts():
    assert figures.median([3.0, 1.0, 2.0]) == 2.0
    assert figures.median([4, 1, 3, 2]) == 2.5
    assert figures.median([7]) == 7.0


def test_median_of_nothing_is_refused():
    with pytest.raises(ValueError, match="at least one run"):
        figures.median([])


def test_ratio_is_how_many_times_faster():
    assert figures.ratio(200.0, 20.0) == 10.0
    with pytest.raises(ValueError, match="above zero"):
        figures.ratio(5.0, 0.0)


def test_scaling_a_serial_sample_to_the_batch():
    scaled = figures.scale(total_seconds=50.0, measured=10, wanted=100)
    assert scaled.seconds == 500.0
    assert scaled.text() == "scaled from 10 to 100"
    whole = figures.scale(total_seconds=42.0, measured=30, wanted=30)
    assert (whole.seconds, whole.text()) == (42.0, "all 30 measured")


@pytest.mark.parametrize("measured, wanted, words", [(0, 10, "at least 1"), (11, 10, "more than the batch")])
def test_scaling_refuses_an_impossible_sample(measured, wanted, words):
    with pytest.raises(ValueError, match=words):
        figures.scale(10.0, measured, wanted)


def test_a_time_target_passes_only_under_its_limit():
    target = figures.Target(8)
    assert target.judge(7.99) == "pass"
    assert target.judge(8.0) == "miss"
    assert target.text() == "< 8 s"


def test_a_ratio_target_passes_at_its_limit():
    target = figures.Target(10, at_least=True, size=100)
    assert target.judge(10.0, size=100) == "pass"
    assert target.judge(9.9, size=100) == "miss"
    assert target.text() == ">= 10x for 100"


def test_a_sized_target_does_not_judge_another_size():
    target = figures.TARGETS["audit"]
    assert target.judge(1.0, size=200) == "n/a"
    assert target.judge(1.0, size=1000) == "pass"
    assert target.judge(12.0, size=1000) == "miss"


def test_the_issue_targets():
    assert {k: (t.limit, t.at_least, t.size) for k, t in figures.TARGETS.items()} == {
        "approval": (8, False, None), "batch": (60, False, 100), "batch_ratio": (10, True, 100),
        "audit": (10, False, 1000), "rerun": (15, False, 100), "cli_version": (0.3, False, None),
        "cli_help": (0.3, False, None), "cli_listing": (0.3, False, None)}


def test_the_report_table_shows_value_target_and_result():
    rows = [figures.Figure("batch", "2. batch of 100", 45.0, "one run", size=100),
            figures.Figure("batch_ratio", "   ratio", 12.34, "side by side", size=100, ratio=True),
            figures.Figure("serial", "   one by one", 555.0, "scaled from 10 to 100", size=100)]
    text = figures.render(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["figure", "value", "how", "target", "result"]
    assert "45.00 s" in lines[2] and "< 60 s for 100" in lines[2] and lines[2].endswith("pass")
    assert "12.3x" in lines[3] and lines[3].endswith("pass")
    assert lines[4].endswith("scaled from 10 to 100")  # no target: no verdict
    assert rows[0].as_dict() == {"key": "batch", "title": "2. batch of 100", "value": 45.0, "unit": "s",
                                 "detail": "one run", "sites": 100, "target": "< 60 s for 100",
                                 "result": "pass"}


def test_profile_phases_from_saga_events():
    marks = [figures.Mark("apply_started", at(0), fqdn="a"), figures.Mark("apply_started", at(0), fqdn="b"),
             figures.Mark("certificate_issued", at(2), fqdn="a"), figures.Mark("certificate_issued", at(3), fqdn="b")]
    for step, start, end in (("ip", 3, 4), ("db", 4, 6), ("web", 6, 16), ("dns", 16, 17)):
        marks += [figures.Mark("saga_intent", at(start), step, f) for f in "ab"]
        marks += [figures.Mark("saga_done", at(end), step, "a")]
        marks += [figures.Mark("saga_done" if step != "web" else "saga_failed", at(end), step, "b")]
        if step == "web":
            break
    marks += [figures.Mark("site_provisioned", at(18), fqdn="a"), figures.Mark("letter_issued", at(21))]
    phases = figures.profile(list(reversed(marks))).phases  # order of the events does not matter
    assert [(p.name, p.seconds, p.sites) for p in phases] == [
        ("certificates", 3.0, 2), ("step ip", 1.0, 2), ("step db", 2.0, 2), ("step web", 10.0, 1),
        ("verify and record", 2.0, 1), ("letters", 3.0, 1)]
    assert phases[3].per_site() == 10.0
    rendered = figures.Profile(phases).render(total=25.0)
    assert "step web" in rendered and "(the whole batch command: 25.00 s)" in rendered


def test_profile_of_no_events_is_empty():
    assert figures.profile([]).phases == []
