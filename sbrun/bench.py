"""`sbrun-bench`: how close SB and Stale-SB come to their cost-model speedup.

Per-example costs f_sel (selection forward) and f+b (training forward + backward + step) are
measured directly; the cost model then predicts the per-epoch speedup over Traditional,
(f+b) / (f_sel/n + s (f+b)), with s the backprop fraction each variant actually had. Every
variant's epochs are measured interleaved with the others (round-robin, `--repeats` rounds), so
drift on a shared machine hits them all alike. Two references run in the same rounds: a plain
hand-written PyTorch loop on the same device-resident data path (sbrun's own overhead), and a
torchvision DataLoader pipeline with the same augmentation (what the data path buys).
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import pandas as pd
import torch
import torch.nn.functional as F

from .data import augment
from .config import ConfigError
from .data import DataError
from .engine import Trainer, build_optimizer, resolve_device
from .models import build_model
from .records import atomic_write, environment
from .samplers.rules import cost_model_speedup

PRESETS = {
    # MNIST on a CPU: the small CNN (real MNIST from --data-dir if present, else MNIST-shaped synthetic).
    "cpu": ["dataset=mnist", "model=cnn", "model.width=16", "dataset.subset=12800"],
    # CIFAR-shaped data with crop+flip+cutout and ResNet-18, as on the paper's GPUs.
    "gpu": ["dataset=synthetic", "dataset.channels=3", "dataset.image_size=32", "dataset.num_classes=10",
            "dataset.n_train=50000", "dataset.n_test=1000", "dataset.mean=[0.5,0.5,0.5]",
            "dataset.std=[0.25,0.25,0.25]", "dataset.crop_padding=4", "dataset.flip=true",
            "dataset.cutout=16", "model=resnet18", "precision=bf16"],
}
VARIANTS = [("traditional", ["sampler=traditional"], 1),
            ("sb beta=1", ["sampler=sb", "beta=1"], 1),
            ("sb beta=2", ["sampler=sb", "beta=2"], 1),
            ("sb beta=3", ["sampler=sb", "beta=3"], 1),
            ("stale_sb n=2", ["sampler=stale_sb", "beta=2", "sampler.staleness=2"], 2),
            ("stale_sb n=3", ["sampler=stale_sb", "beta=2", "sampler.staleness=3"], 3)]
QUIET = ["plots=false", "progress=off", "loss_snapshots=0", "extremes=0", "checkpoint.enabled=false",
         "epochs=1000"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn: Callable[[], None], device: torch.device, reps: int) -> float:
    times = []
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def per_example_costs(trainer: Trainer, reps: int) -> Dict[str, float]:
    """f_sel and f+b in seconds per example, from timed batches of the trainer's own code."""
    cfg, device = trainer.cfg, trainer.device
    trainer.stream.start_epoch(10_000)
    chunk = next(iter(trainer.stream.chunks(cfg.select_size)))
    xs, ys = chunk.images()
    xb, yb = xs[:cfg.batch_size], ys[:cfg.batch_size]

    def train_step():
        trainer.net.train()
        loss = trainer._losses("train", xb, yb).mean()
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()

    for fn in (lambda: trainer._select_forward(xs, ys), train_step):   # warm-up
        fn()
    f_sel = _median_time(lambda: trainer._select_forward(xs, ys), device, reps) / xs.shape[0]
    fb = _median_time(train_step, device, reps) / xb.shape[0]
    return {"f_sel": f_sel, "fb": fb}


class PlainLoop:
    """A hand-written epoch over the same device-resident uint8 data and augmentation."""

    def __init__(self, trainer: Trainer):
        cfg, device = trainer.cfg, trainer.device
        self.cfg, self.device = cfg, device
        self.images = trainer.stream.images
        self.labels = trainer.stream.labels
        ds = cfg.dataset
        self.model = build_model(cfg.model, ds.channels, ds.image_size, ds.num_classes).to(device)
        self.model = self.model.to(memory_format=trainer.memory_format)
        self.memory_format = trainer.memory_format
        self.opt = build_optimizer(self.model, cfg.optim)
        self.aug = trainer.stream.aug
        self.autocast = trainer.autocast
        self.gen = torch.Generator(device=device).manual_seed(0)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with self.autocast:
            out = self.model(x.contiguous(memory_format=self.memory_format))
        loss = F.cross_entropy(out.float(), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def batches(self):
        perm = torch.randperm(self.labels.numel(), generator=self.gen, device=self.device)
        for idx in perm.split(self.cfg.batch_size):
            yield self.aug.train(self.images[idx], self.gen), self.labels[idx]

    def epoch(self) -> float:
        self.model.train()
        _sync(self.device)
        t = time.perf_counter()
        for x, y in self.batches():
            self.step(x, y)
        _sync(self.device)
        return time.perf_counter() - t


class LoaderLoop(PlainLoop):
    """The same training loop fed by a torchvision DataLoader with per-example transforms."""

    def __init__(self, trainer: Trainer, workers: int):
        super().__init__(trainer)
        from torch.utils.data import DataLoader, TensorDataset
        from torchvision.transforms import v2

        ds = self.cfg.dataset
        steps = [v2.RandomCrop(ds.image_size, padding=ds.crop_padding)] if ds.crop_padding else []
        steps += [v2.RandomHorizontalFlip()] if ds.flip else []
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(ds.mean, ds.std)]
        self.transform = v2.Compose(steps)
        self.cutout = ds.cutout
        data = TensorDataset(self.images.cpu(), self.labels.cpu())
        self.loader = DataLoader(_Transformed(data, self.transform, self.cutout), batch_size=self.cfg.batch_size,
                                 shuffle=True, num_workers=workers, pin_memory=self.device.type == "cuda",
                                 persistent_workers=workers > 0, drop_last=False)

    def batches(self):
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


class _Transformed(torch.utils.data.Dataset):
    def __init__(self, data, transform, cutout: int):
        self.data, self.transform, self.cutout = data, transform, cutout

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        x, y = self.data[i]
        x = self.transform(x)
        if self.cutout:
            x = augment.cutout(x[None], self.cutout, None)[0]
        return x, y


def _peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB (device)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (process RSS)"


def run_bench(base: List[str], repeats: int, cost_reps: int, loader_workers: int, out_dir: Path,
              log=print) -> pd.DataFrame:
    from .cli import config_dir
    from hydra import compose, initialize_config_dir
    from .config import validate

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        configs = {name: validate(compose("config", overrides=base + QUIET + extra))
                   for name, extra, _ in VARIANTS}
    device = resolve_device(configs["traditional"].device)
    tmp = Path(tempfile.mkdtemp(prefix="sbrun-bench-"))
    trainers = {name: Trainer(cfg, tmp / name.replace(" ", "_"), device) for name, cfg in configs.items()}
    cycles = {name: n for name, _, n in VARIANTS}
    trad = trainers["traditional"]
    n = trad.n
    log(f"device: {environment(device)['device_name']} | {n} training examples | model "
        f"{trad.cfg.model.name} | data path {trad.data_path}")
    log("warm-up: one priming epoch per variant (not timed)")
    next_epoch = {}
    for name, t in trainers.items():
        t.timed_epoch(0)
        next_epoch[name] = 1
    costs = per_example_costs(trad, cost_reps)
    log(f"f_sel = {costs['f_sel'] * 1e6:.1f} us/example, f+b = {costs['fb'] * 1e6:.1f} us/example "
        f"(ratio f+b / f_sel = {costs['fb'] / costs['f_sel']:.2f})")
    plain = PlainLoop(trad)
    loader = LoaderLoop(trad, loader_workers)
    plain.epoch()
    loader.epoch()
    samples: Dict[str, List[dict]] = {name: [] for name in trainers}
    samples["plain loop"], samples["dataloader loop"] = [], []
    for r in range(repeats):
        for name, t in trainers.items():
            total = book = 0.0
            backprops = 0
            for _ in range(cycles[name]):     # Stale-SB: one full fresh/stale cycle
                phases, state = t.timed_epoch(next_epoch[name])
                next_epoch[name] += 1
                total += phases["total"]
                book += phases["bookkeeping"]
                backprops += state.backprops
            samples[name].append({"epoch_s": total / cycles[name], "bookkeeping_s": book / cycles[name],
                                  "frac": backprops / (n * cycles[name])})
        samples["plain loop"].append({"epoch_s": plain.epoch()})
        samples["dataloader loop"].append({"epoch_s": loader.epoch()})
        log(f"round {r + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]['epoch_s']:.2f}s" for k, v in samples.items()))

    trad_med = statistics.median(s["epoch_s"] for s in samples["traditional"])
    rows = []
    for name, runs in samples.items():
        times = [s["epoch_s"] for s in runs]
        med = statistics.median(times)
        row = {"variant": name, "epoch_s_median": med, "epoch_s_min": min(times), "epoch_s_max": max(times),
               "images_per_s": n / med, "speedup": trad_med / med}
        if "frac" in runs[0]:
            frac = statistics.median(s["frac"] for s in runs)
            staleness = cycles[name] if name.startswith("stale") else 1
            predicted = 1.0 if name == "traditional" else cost_model_speedup(costs["f_sel"], costs["fb"], frac,
                                                                              staleness)
            row.update({"backprop_frac": frac, "predicted_speedup": predicted,
                        "efficiency": row["speedup"] / predicted,
                        "bookkeeping_share": statistics.median(s["bookkeeping_s"] / s["epoch_s"] for s in runs)})
        rows.append(row)
    df = pd.DataFrame(rows)
    df["f_sel_us"] = costs["f_sel"] * 1e6
    df["fb_us"] = costs["fb"] * 1e6
    df["peak_memory"] = _peak_memory(device)
    df["device"] = environment(device)["device_name"]
    df["repeats"] = repeats
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "bench.csv", df.to_csv(index=False).encode())
    atomic_write(out_dir / "bench.md", to_markdown(df).encode())
    return df


def to_markdown(df: pd.DataFrame) -> str:
    cols = [("variant", "variant", "{}"), ("epoch_s_median", "epoch s (median)", "{:.2f}"),
            ("epoch_s_min", "min", "{:.2f}"), ("epoch_s_max", "max", "{:.2f}"),
            ("backprop_frac", "backprop frac", "{:.3f}"), ("speedup", "speedup", "{:.2f}x"),
            ("predicted_speedup", "cost model", "{:.2f}x"), ("efficiency", "efficiency", "{:.2f}"),
            ("bookkeeping_share", "bookkeeping", "{:.1%}"), ("images_per_s", "images/s", "{:.0f}")]
    lines = ["| " + " | ".join(h for _, h, _ in cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        cells = []
        for key, _, fmt in cols:
            v = r.get(key)
            cells.append("–" if v is None or (isinstance(v, float) and v != v) else fmt.format(v))
        lines.append("| " + " | ".join(cells) + " |")
    first = df.iloc[0]
    lines.append("")
    lines.append(f"Device: {first['device']}; f_sel = {first['f_sel_us']:.1f} us/example, "
                 f"f+b = {first['fb_us']:.1f} us/example; peak memory {first['peak_memory']}; "
                 f"{int(first['repeats'])} interleaved rounds.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="sbrun-bench", description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", help="extra sbrun overrides, e.g. device=cuda dataset.subset=20000")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="cpu: MNIST + small CNN; gpu: CIFAR-shaped data + ResNet-18 (default: by device)")
    p.add_argument("--data-dir", default=os.environ.get("SBRUN_DATA_DIR", "data"))
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--cost-reps", type=int, default=20, help="timed batches for f_sel and f+b (default 20)")
    p.add_argument("--loader-workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--out", type=Path, default=Path("results/bench"))
    args = p.parse_args(argv)
    preset = args.preset or ("gpu" if torch.cuda.is_available() else "cpu")
    base = PRESETS[preset] + [f"data_dir={args.data_dir}"] + args.overrides
    try:
        df = run_bench(base, args.repeats, args.cost_reps, args.loader_workers, args.out)
    except (ConfigError, DataError) as err:
        print(f"sbrun-bench: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print()
    print(to_markdown(df))
    print(f"written: {args.out / 'bench.csv'}, {args.out / 'bench.md'}")


if __name__ == "__main__":
    main()
