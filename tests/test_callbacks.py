"""The `callbacks` config group: objects by `_target_` on a run's hooks, attached by one command
(an override or a group option) and never recorded, so a resume does not bring them back."""
import json

from conftest import TINY, run_sbrun
from sbrun.components import logger_config

RUN = [*TINY, "epochs=2", "sampler=traditional"]


def test_a_callback_by_override_sees_every_step_and_is_not_recorded(tmp_path, steps):
    res = run_sbrun(*RUN, f"out_dir={tmp_path}", "name=c", *steps.overrides)
    assert res.returncode == 0, res.stderr
    run = tmp_path / "runs" / "c"
    summary = json.loads((run / "summary.json").read_text())
    assert steps.read("step") == list(range(1, summary["total_steps"] + 1))
    assert sorted(set(steps.read("epoch"))) == [0, 1]
    assert "callbacks" not in summary["config"] and not any("callbacks" in o for o in summary["overrides"])

    assert run_sbrun(f"resume={run}", "epochs=3").returncode == 0       # not brought back
    assert sorted(set(steps.read("epoch"))) == [0, 1]
    assert run_sbrun(f"resume={run}", "epochs=4", *steps.overrides).returncode == 0   # given again: attached
    assert sorted(set(steps.read("epoch"))) == [0, 1, 3]


def test_a_callbacks_option_from_a_config_dir(tmp_path, steps):
    (tmp_path / "conf" / "callbacks").mkdir(parents=True)
    (tmp_path / "conf" / "callbacks" / "spy.yaml").write_text(
        f"steps:\n  _target_: spies.StepLog\n  path: {steps.path}\n")
    res = run_sbrun("--config-dir", str(tmp_path / "conf"), *RUN, "epochs=1", "callbacks=spy",
                    f"out_dir={tmp_path}", "name=c")
    assert res.returncode == 0, res.stderr
    assert steps.read("size") == [32] * 16


def test_a_bad_callback_is_one_line_before_training(tmp_path):
    for override, words in [("+callbacks.x._target_=nope.Nothing", "callbacks.x._target_=nope.Nothing cannot be"),
                            ("+callbacks.steps.pth=x", "callbacks.steps.pth is not a parameter of spies.StepLog")]:
        res = run_sbrun(*RUN, f"out_dir={tmp_path}", "+callbacks.steps._target_=spies.StepLog",
                        "+callbacks.steps.path=x", override)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1 and words in lines[0], res.stderr
    assert not (tmp_path / "runs").exists()


def test_a_config_saved_with_the_csv_tracker_class_reads_as_csv():
    old = {"csv": {"_target_": "sbrun.trackers.base.CsvTracker"}, "tensorboard": {"_target_": "x.Y", "dir": None}}
    assert logger_config(old) == {"csv": None, "tensorboard": {"_target_": "x.Y", "dir": None}}
