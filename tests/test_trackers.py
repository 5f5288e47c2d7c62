"""The `logger` group: what each tracker wrote is read back from its own files (TensorBoard event
files, the MLflow file store, the W&B offline run), resumes continue the same tracker run without
duplicate steps, and a missing package or a bad setting is one line before any training. Trackers
are driven as the runner drives them: subscribed to a run's Hooks."""
from __future__ import annotations

import importlib.util
import json
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sbrun.config import ConfigError
from sbrun.hooks import Hooks, RunInfo
from sbrun.trackers import STATE_FILE, Tracker, TrackerUnavailable, build
from sbrun.trackers.base import flat_params, numeric_metrics

REPO = Path(__file__).resolve().parents[1]
EXTRAS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}   # option -> package
CONFIG = {"seed": 3, "beta": 2.0, "hours": None, "model": {"name": "mlp", "width": 32},
          "dataset": {"name": "synthetic", "mean": [0.5]}, "sampler": {"name": "sb"}}


def _compose(options, overrides) -> dict:
    """The `logger` node as the CLI composes it, from the real conf/logger/*.yaml, through a
    minimal primary config (so these tests do not depend on the rest of conf/)."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "logger").symlink_to(REPO / "conf" / "logger")
        (Path(tmp) / "primary.yaml").write_text("defaults:\n  - logger: csv\n  - _self_\n")
        with initialize_config_dir(config_dir=tmp, version_base="1.3"):
            cfg = compose("primary", overrides=[f"logger=[{','.join(options)}]", *overrides])
    return OmegaConf.to_container(cfg.logger, resolve=True)


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true",
                       "WANDB_CONSOLE": "off", "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true",
                       "WANDB_X_DISABLE_STATS": "true", "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
                       "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache")}.items():
        monkeypatch.setenv(key, value)


def png(path: Path, size=(12, 8)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(path)
    return path


def outputs(run_dir: Path) -> None:
    """The files a tracker hands on when the run ends: figures, counts, summary, metrics (not
    loss_snapshots.npz, also written here)."""
    png(run_dir / "figures" / "curve.png")
    (run_dir / "selection_counts.csv").write_text("index,backprops\n0,1\n")
    (run_dir / "summary.json").write_text('{"status": "finished"}\n')
    (run_dir / "metrics.csv").write_text("epoch,test_acc\n1,0.1\n")
    (run_dir / "loss_snapshots.npz").write_bytes(b"")


def row(epoch: int, acc: float) -> dict:
    return {"epoch": epoch, "test_acc": acc, "lr": 0.1, "train_loss": float("nan"), "sampler": "sb",
            "is_active": True}


def opened(trackers, run_dir, config=CONFIG, rank=0) -> Hooks:
    """The trackers subscribed to a run's hooks and started, as the runner does it."""
    hooks = Hooks().subscribe(*trackers)
    hooks.start(RunInfo(Path(run_dir), config, "run-a", rank))
    return hooks


def session(cfg, run_dir, epochs, status, acc=lambda e: e / 10, config=CONFIG):
    hooks = opened(build(cfg), run_dir, config)
    for e in epochs:
        hooks.call("on_epoch", row(e, acc(e)))
    outputs(run_dir)
    hooks.call("on_end", status, {})
    return hooks


# --- config group, preflight, one-line errors -------------------------------------------------

def test_the_logger_group_composes_several_trackers_with_their_settings():
    cfg = _compose(["csv", "tensorboard", "wandb", "mlflow"],
                   ["logger.wandb.project=cifar", "logger.mlflow.experiment=e1"])
    assert list(cfg) == ["csv", "tensorboard", "wandb", "mlflow"]
    assert cfg["tensorboard"]["_target_"] == "sbrun.trackers.tensorboard.TensorBoardTracker"
    assert cfg["wandb"]["project"] == "cifar" and cfg["mlflow"]["experiment"] == "e1"
    trackers = build(cfg)   # every package is installed in the test environment
    assert [(t.name, type(t).__name__) for t in trackers] == [
        ("tensorboard", "TensorBoardTracker"), ("wandb", "WandbTracker"), ("mlflow", "MlflowTracker")]
    assert trackers[1].project == "cifar" and trackers[2].experiment == "e1"
    assert _compose(["csv"], []) == {"csv": None} and build({"csv": None}) == []   # csv: no tracker


@pytest.mark.parametrize("option", sorted(EXTRAS))
def test_a_missing_package_is_one_line_naming_the_extra(option, monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == EXTRAS[option] else real(name, *a))
    cfg = _compose(["csv", option], [])
    with pytest.raises(TrackerUnavailable) as err:
        build(cfg)      # the preflight and the runner alike, before anything starts
    msg = str(err.value)
    assert msg == (f"logger={option} needs the {EXTRAS[option]} package; "
                   f"install it with pip install 'sbrun[{option}]'")
    assert isinstance(err.value, ConfigError)   # the CLI's usage error: exit 2
    assert not any(tmp_path.iterdir())             # nothing started, nothing written


@pytest.mark.parametrize("node, words", [
    ({"wandb": {"_target_": "sbrun.trackers.wandb.WandbTracker", "projct": "x"}},
     ["logger.wandb.projct", "allowed: dir, entity, group, job_type, mode, project, tags"]),
    ({"wandb": {"_target_": "sbrun.trackers.wandb.WandbTracker", "mode": "sometimes"}},
     ["logger.wandb.mode='sometimes'", "offline"]),
    ({"mlflow": {"_target_": "sbrun.trackers.mlflow.MlflowTracker", "experiment": 3}},
     ["logger.mlflow.experiment=3 is invalid; allowed: a string"]),
    ({"tb": {"_target_": "sbrun.trackers.nope.Tracker"}}, ["logger.tb._target_", "cannot be imported"]),
    ({"tb": {"_target_": "builtins.dict"}}, ["logger.tb._target_", "a subclass of sbrun.trackers.base.Tracker"]),
    ({"tb": {"dir": "x"}}, ["logger.tb", "_target_"]),
])
def test_a_bad_tracker_setting_is_one_line_naming_the_key(node, words):
    with pytest.raises(ConfigError) as err:
        build(node)
    msg = str(err.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_choosing_csv_alone_imports_no_tracker_package_and_writes_nothing(tmp_path):
    code = ("import sys; from pathlib import Path; from sbrun.trackers import build; from sbrun.hooks import *\n"
            "h = Hooks().subscribe(*build({'csv': None})); h.start(RunInfo(Path(sys.argv[1]), {}, 'r'))\n"
            "h.call('on_epoch', {'epoch': 1, 'a': 1.0}); h.call('on_end', 'finished', {})\n"
            "print(sorted(m for m in ('wandb', 'mlflow', 'tensorboard') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert not any(tmp_path.iterdir())


# --- a tracker on the run's hooks ----------------------------------------------------------------

class Recorder(Tracker):
    """A test tracker that keeps what it was sent; `fail_at` makes it raise at that step."""

    def __init__(self, name, fail_at=None):
        self.name, self.fail_at, self.logged, self.finished = name, fail_at, [], None

    def start(self, run, saved):
        return {"id": f"{self.name}-1"}

    def log_metrics(self, metrics, step):
        if step == self.fail_at:
            raise ConnectionError("server unreachable\nsecond line")
        self.logged.append((step, metrics))

    def finish(self, status, artifacts):
        self.finished = (status, [p.name for p in artifacts])


def test_trackers_get_numbers_once_per_step_and_a_failing_one_is_dropped(tmp_path, caplog):
    good, bad = Recorder("good"), Recorder("bad", fail_at=2)
    hooks = opened([good, bad], tmp_path)
    for step in (1, 2, 2, 1, 3):   # a replayed step is not sent again
        hooks.call("on_epoch", row(step, step / 10))
    assert [s for s, _ in good.logged] == [1, 2, 3] and [s for s, _ in bad.logged] == [1]
    # NaN and text are dropped, a bool becomes 0/1
    assert good.logged[0][1] == {"epoch": 1.0, "test_acc": 0.1, "lr": 0.1, "is_active": 1.0}
    warning = [r.getMessage() for r in caplog.records if "tracker bad" in r.getMessage()]
    assert len(warning) == 1 and "server unreachable" in warning[0] and "\n" not in warning[0]
    assert json.loads((tmp_path / STATE_FILE).read_text()) == {"good": {"id": "good-1", "last_step": 3},
                                                               "bad": {"id": "bad-1", "last_step": 1}}
    outputs(tmp_path)
    hooks.call("on_end", "stopped", {})
    hooks.call("on_end", "finished", {})   # a second end is ignored
    assert good.finished == ("stopped", ["curve.png", "selection_counts.csv", "summary.json", "metrics.csv"])
    assert bad.finished is None
    with pytest.raises(ValueError):
        Hooks().subscribe(Recorder("x")).call("on_end", "done", {})


def test_a_resumed_tracker_continues_from_its_own_last_step(tmp_path):
    (tmp_path / STATE_FILE).write_text(json.dumps({"good": {"id": "good-1", "last_step": 2}}))
    good, new = Recorder("good"), Recorder("new")
    hooks = opened([good, new], tmp_path)
    for step in (2, 3):
        hooks.call("on_epoch", row(step, step / 10))
    assert [s for s, _ in good.logged] == [3] and [s for s, _ in new.logged] == [2, 3]
    # a trackers.json written before the steps were per tracker: its shared last_step
    (tmp_path / STATE_FILE).write_text(json.dumps({"last_step": 3, "good": {"id": "good-1"}}))
    old = Recorder("good")
    opened([old], tmp_path).call("on_epoch", row(3, 0.3))
    assert old.logged == [] and old.step == 3


def test_pure_conversions():
    assert numeric_metrics({"a": 1, "b": float("nan"), "c": "x", "d": None, "e": False, "f": float("inf")}) \
        == {"a": 1.0, "e": 0.0, "f": float("inf")}
    assert flat_params({"a": {"b": 1, "c": [0.5, 1]}, "d": None, "e": "s", "f": True}) \
        == {"a.b": 1, "a.c": "[0.5, 1]", "d": "null", "e": "s", "f": True}


def test_trackers_on_other_ranks_log_nothing(tmp_path, wandb_offline):
    cfg = _compose(["csv", "tensorboard", "wandb", "mlflow"], [])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = {**CONFIG, "out_dir": str(tmp_path / "results")}
    trackers = build(cfg)
    hooks = opened(trackers, run_dir, config, rank=1)
    hooks.call("on_epoch", row(1, 0.1))
    hooks.call("on_end", "finished", {})
    assert [t.run_dir for t in trackers] == [None, None, None] and list(run_dir.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]   # no mlruns/, no wandb/


# --- TensorBoard and MLflow: read back, and a resume after a kill ------------------------------

def read_tensorboard(log_dir: Path):
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.util import tensor_util

    acc = ea.EventAccumulator(str(log_dir), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0, ea.IMAGES: 0})
    acc.Reload()
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    text = {tag.split("/")[0]: [tensor_util.make_ndarray(e.tensor_proto).item().decode() for e in acc.Tensors(tag)]
            for tag in acc.Tags()["tensors"]}
    start = plugin_data_pb2.HParamsPluginData.FromString(
        acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    hparams = {k: v.number_value if v.HasField("number_value") else v.string_value
               for k, v in start.hparams.items()}
    images = {tag: [(e.step, e.width, e.height) for e in acc.Images(tag)] for tag in acc.Tags()["images"]}
    return scalars, text, hparams, images


def test_tensorboard_and_mlflow_read_back_and_resume_the_same_runs_after_a_kill(tmp_path):
    from mlflow.tracking import MlflowClient

    cfg = _compose(["csv", "tensorboard", "mlflow"], [])
    run_dir = tmp_path / "results" / "runs" / "run-a"
    run_dir.mkdir(parents=True)
    config = {**CONFIG, "out_dir": str(tmp_path / "results")}

    # First process: epochs 1-3 reach the trackers, then a SIGKILL lands after step 3 was sent
    # but before it was recorded (trackers.json still says 2).
    tensorboard, mlflow = trackers = build(cfg)
    first = opened(trackers, run_dir, config)
    for e in (1, 2, 3):
        first.call("on_epoch", row(e, e / 10))
    tensorboard.writer.close()   # the process dies: no on_end
    ids = json.loads((run_dir / STATE_FILE).read_text())
    assert ids["tensorboard"]["last_step"] == ids["mlflow"]["last_step"] == 3
    (run_dir / STATE_FILE).write_text(json.dumps({k: {**v, "last_step": 2} for k, v in ids.items()}))

    # The resumed process replays epoch 3 (a different value on a GPU) and goes on.
    second = opened(build(cfg), run_dir, config)
    for e in (3, 4, 5):
        second.call("on_epoch", row(e, e / 10 + 0.01))
    outputs(run_dir)
    second.call("on_end", "stopped", {})
    resumed = json.loads((run_dir / STATE_FILE).read_text())
    assert resumed["mlflow"]["run_id"] == ids["mlflow"]["run_id"]
    assert resumed["mlflow"]["last_step"] == resumed["tensorboard"]["last_step"] == 5

    # TensorBoard: one event file series, steps 1..5 once each; the purged step 3 is the replay's.
    scalars, text, hparams, images = read_tensorboard(run_dir / "tensorboard")
    assert [s for s, _ in scalars["test_acc"]] == [1, 2, 3, 4, 5]
    assert scalars["test_acc"][2][1] == pytest.approx(0.31) and scalars["test_acc"][0][1] == pytest.approx(0.1)
    assert "train_loss" not in scalars and scalars["is_active"][0][1] == 1.0   # NaN never sent
    assert len(text["config"]) == 1 and "width: 32" in text["config"][0]        # once, not per process
    assert hparams["model.width"] == 32 and hparams["sampler.name"] == "sb" and hparams["hours"] == "null"
    assert images == {"figures/curve": [(5, 12, 8)]}
    assert text["status"] == ["stopped"]

    # MLflow: the same run, params once, steps 1..5 once each (the stored step 3 is kept).
    client = MlflowClient((tmp_path / "results" / "mlruns").as_uri())
    run = client.get_run(ids["mlflow"]["run_id"])
    assert run.info.status == "KILLED" and run.info.run_name == "run-a"
    assert client.get_experiment(run.info.experiment_id).name == "sbrun"
    assert run.data.params["model.width"] == "32" and run.data.params["dataset.mean"] == "[0.5]"
    history = client.get_metric_history(run.info.run_id, "test_acc")
    assert [m.step for m in history] == [1, 2, 3, 4, 5]
    assert [m.value for m in history] == pytest.approx([0.1, 0.2, 0.3, 0.41, 0.51])
    assert "train_loss" not in run.data.metrics
    listed = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert listed == {"figures", "selection_counts.csv", "summary.json", "metrics.csv"}
    assert [a.path for a in client.list_artifacts(run.info.run_id, "figures")] == ["figures/curve.png"]

    # A third process (epochs= extended) finishes the same MLflow run.
    session(cfg, run_dir, [6], "finished", config=config)
    run = client.get_run(ids["mlflow"]["run_id"])
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test_acc")] == [1, 2, 3, 4, 5, 6]
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_mlflow_takes_a_tracking_uri_and_experiment_from_config(tmp_path):
    from mlflow.tracking import MlflowClient

    store = (tmp_path / "elsewhere").as_uri()
    cfg = _compose(["mlflow"], [f"logger.mlflow.tracking_uri={store}", "logger.mlflow.experiment=cifar10",
                                "+logger.mlflow.tags.owner=me"])
    session(cfg, tmp_path / "run", [1, 2], "failed")
    run_id = json.loads((tmp_path / "run" / STATE_FILE).read_text())["mlflow"]["run_id"]
    run = MlflowClient(store).get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["owner"] == "me"
    assert MlflowClient(store).get_experiment(run.info.experiment_id).name == "cifar10"


# --- W&B offline ------------------------------------------------------------------------------

def wandb_records(path: Path):
    """The records of a W&B offline run file (.wandb). Its framing is LevelDB's log format: a
    7-byte ':W&B' header, then 32 KiB blocks of chunks [crc32 u32, length u16, type u8] where
    type 1 = a whole record, 2/3/4 = first/middle/last piece; each record a protobuf Record."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", data[:7]
    pos, pieces = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:            # a block tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pieces += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pieces)
            pieces = b""
            yield record


def read_wandb_offline(run_dir: Path):
    """Per offline run directory (oldest first): run id, config, history rows, summary, files, exit code."""
    runs = []
    # Directory names hold the start second (and "-1" when two share it), so order by content.
    for run_file in run_dir.glob("wandb/offline-run-*/run-*.wandb"):
        out = {"id": None, "config": {}, "history": [], "summary": {}, "files": set(), "exit": None}
        for rec in wandb_records(run_file):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                out["id"], out["project"] = rec.run.run_id, rec.run.project
                out["start"] = rec.run.start_time.ToNanoseconds()
                out["config"].update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
            elif kind == "config":
                out["config"].update({i.key: json.loads(i.value_json) for i in rec.config.update})
            elif kind == "history":
                out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                       for i in rec.history.item})
            elif kind == "summary":
                out["summary"].update({i.key: json.loads(i.value_json) for i in rec.summary.update if i.key})
            elif kind == "files":
                out["files"] |= {f.path for f in rec.files.files}
            elif kind == "exit":
                out["exit"] = rec.exit.exit_code
        runs.append(out)
    return sorted(runs, key=lambda r: r.get("start", 0))


def test_wandb_offline_reads_back_and_a_resume_continues_the_same_run(tmp_path, wandb_offline):
    cfg = _compose(["csv", "wandb"], ["logger.wandb.project=sb-tests", "logger.wandb.tags=[a,b]"])
    run_dir = tmp_path / "run"
    session(cfg, run_dir, [1, 2, 3], "stopped")
    run_id = json.loads((run_dir / STATE_FILE).read_text())["wandb"]["id"]
    session(cfg, run_dir, [3, 4, 5], "finished", acc=lambda e: e / 10 + 0.01)   # epoch 3 replayed
    assert json.loads((run_dir / STATE_FILE).read_text())["wandb"]["id"] == run_id
    import wandb
    wandb.teardown()   # finish() returns before wandb-core has flushed the offline file; this waits

    first, second = read_wandb_offline(run_dir)
    assert first["id"] == second["id"] == run_id and first["project"] == "sb-tests"
    assert first["config"]["model"] == {"name": "mlp", "width": 32} and first["config"]["seed"] == 3
    steps = [h["_step"] for r in (first, second) for h in r["history"]]
    assert steps == [1, 2, 3, 4, 5]
    acc = [h["test_acc"] for r in (first, second) for h in r["history"]]
    assert acc == pytest.approx([0.1, 0.2, 0.3, 0.41, 0.51])
    assert all("train_loss" not in h and "sampler" not in h for h in first["history"])
    assert first["history"][-1]["figures/curve/_type"] == "image-file"   # the figure sits at the last epoch
    assert {"figures/curve.png", "selection_counts.csv", "summary.json", "metrics.csv"} <= first["files"]
    assert (first["summary"]["status"], first["exit"]) == ("stopped", 3)
    assert (second["summary"]["status"], second["exit"]) == ("finished", 0)


def test_a_tracker_that_cannot_start_is_one_line_and_closes_the_others(tmp_path):
    cfg = _compose(["tensorboard", "mlflow"], [])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # A resumed run whose MLflow run is not in the store (results moved, store deleted).
    (run_dir / STATE_FILE).write_text(json.dumps({"mlflow": {"run_id": "0" * 32, "last_step": 2}}))
    with pytest.raises(TrackerUnavailable) as err:
        opened(build(cfg), run_dir, {**CONFIG, "out_dir": str(tmp_path)})
    msg = str(err.value)
    assert msg.startswith("logger=mlflow could not start: ") and "0" * 32 in msg and "\n" not in msg
    _, text, _, _ = read_tensorboard(run_dir / "tensorboard")   # TensorBoard was closed, resumable
    assert text["status"] == ["stopped"]


def test_a_run_through_the_command_line_follows_in_tensorboard_and_resumes_the_same_run(tmp_path):
    from conftest import TINY, run_sbrun

    args = [*TINY, "plots=true", "logger=[csv,tensorboard]", f"out_dir={tmp_path}", "name=t"]
    assert run_sbrun(*args, "epochs=2").returncode == 0
    run = tmp_path / "runs" / "t"
    more = run_sbrun(f"resume={run}", "epochs=3")
    assert more.returncode == 0, more.stderr
    scalars, _texts, hparams, images = read_tensorboard(run / "tensorboard")
    assert hparams["sampler.name"] == "sb" and any("time_to_accuracy" in tag for tag in images)
    import pandas as pd
    metrics = pd.read_csv(run / "metrics.csv")
    steps = [s for s, _ in scalars["test_acc"]]
    assert steps == [1, 2, 3]                                         # one series, no duplicate epoch
    assert [v for _, v in scalars["test_acc"]] == pytest.approx(metrics["test_acc"].tolist(), rel=1e-6)
    assert json.loads((run / STATE_FILE).read_text())["tensorboard"]["last_step"] == 3
