"""Storage benchmark (issue 22): what reading images from disk costs, on a generated JPEG folder.

    python scripts/bench/storage.py --out results/bench/storage_cpu            # the committed table
    python scripts/bench/storage.py --n 2000 --size 32 --repeats 1 --out /tmp/s   # a quick look

1. images/s of one training epoch's reads: sbrun's loader path (dataset.storage=files, memmap,
   memory) against torchvision's ImageFolder + DataLoader with the same workers, batch and the
   equivalent transforms (center square crop and resize, flip, normalise), interleaved rounds,
   medians. Only reading is timed: no model.
2. Traditional, SB and Stale-SB with decoding included: sbrun-bench on the same folder with
   files storage (its table has each variant's speedup, cost-model bound, and bound with d).
3. Peak memory of one files epoch on a second folder whose decoded size is several times that
   memory: the proportional set size (PSS) of the whole process tree, sbrun and its loader workers,
   sampled from /proc every 0.1 s (PSS splits pages the forked workers share, which RSS would count
   once per process).

Writes OUT/storage.md (the tables) and OUT/storage.csv; the bench's own files go to OUT/bench/.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from sbrun.config import DatasetConfig  # noqa: E402
from sbrun.data.folder import load_folder  # noqa: E402
from sbrun.data.make_folder import make_image_folder  # noqa: E402
from sbrun.data.stream import LoaderStream  # noqa: E402

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


def markdown(df: pd.DataFrame) -> str:
    cell = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    rows = [" | ".join(df.columns), " | ".join("---" for _ in df.columns)]
    rows += [" | ".join(cell(v) for v in r) for r in df.itertuples(index=False)]
    return "\n".join(f"| {r} |" for r in rows)


def folder(root: Path, n: int, size: int, vary: float = 0.0) -> Path:
    if not (root / "train").is_dir():
        print(f"generating {n} JPEGs of {size} px in {root} ...", flush=True)
        make_image_folder(root, n_train=n, n_test=max(100, n // 20), size=size, classes=10, vary=vary)
    return root


def sbrun_epoch(root: Path, size: int, storage: str, workers: int, batch: int):
    """One epoch of reads through sbrun's LoaderStream, as a Traditional epoch asks for them."""
    data = load_folder(root, size, channels=3, storage=storage)
    spec = DatasetConfig(name="folder", num_classes=10, channels=3, image_size=size, mean=MEAN, std=STD, flip=True)
    stream = LoaderStream(data.train, spec, 0, torch.device("cpu"), num_workers=workers)

    def epoch(e: int) -> float:
        stream.start_epoch(e)
        t = time.perf_counter()
        for chunk in stream.chunks(batch):
            chunk.images()
        return time.perf_counter() - t
    return epoch, len(data.train)


def torchvision_epoch(root: Path, size: int, workers: int, batch: int):
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    ds = datasets.ImageFolder(root / "train", transform=tf)
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers)

    def epoch(e: int) -> float:
        t = time.perf_counter()
        for _ in loader:
            pass
        return time.perf_counter() - t
    return epoch, len(ds)


def read_rates(root: Path, size: int, workers: int, batch: int, repeats: int) -> pd.DataFrame:
    paths = {"sbrun files": lambda: sbrun_epoch(root, size, "files", workers, batch),
             "sbrun memmap": lambda: sbrun_epoch(root, size, "memmap", workers, batch),
             "sbrun memory": lambda: sbrun_epoch(root, size, "memory", workers, batch),
             "torchvision ImageFolder + DataLoader": lambda: torchvision_epoch(root, size, workers, batch)}
    built = {name: make() for name, make in paths.items()}
    for fn, _ in built.values():        # warm-up: caches written, page cache filled alike for all
        fn(0)
    times = {name: [] for name in built}
    for r in range(repeats):
        for name, (fn, _) in built.items():
            times[name].append(fn(r + 1))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
    rows = []
    base = statistics.median(times["torchvision ImageFolder + DataLoader"])
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append({"path": name, "epoch_s_median": med, "epoch_s_min": min(ts), "epoch_s_max": max(ts),
                     "images_per_s": built[name][1] / med, "vs_torchvision": base / med})
    return pd.DataFrame(rows)


def tree_pss(pid: int) -> int:
    """Proportional resident bytes of `pid` and all its descendants (Linux /proc smaps_rollup)."""
    children = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def peak_memory_epoch(root: Path, size: int, workers: int, out: Path) -> dict:
    """One files epoch of sbrun (a linear model: the reads dominate) with its RSS sampled."""
    cmd = [sys.executable, "-m", "sbrun", "dataset=folder", f"dataset.path={root}", f"dataset.image_size={size}",
           "dataset.storage=files", "dataset.channels=3", f"dataset.mean={MEAN}", f"dataset.std={STD}",
           "dataset.flip=true", "model=linear", "epochs=1", "batch_size=128", "sampler=traditional",
           f"num_workers={workers}", "eval_batch_size=128", "plots=false", "progress=off", "extremes=0",
           "loss_snapshots=0", f"out_dir={out}", "name=rss", "checkpoint.enabled=false"]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    peak = 0

    def sample():
        nonlocal peak
        while proc.poll() is None:
            peak = max(peak, tree_pss(proc.pid))
            time.sleep(0.1)
    t = threading.Thread(target=sample)
    t.start()
    code = proc.wait()
    t.join()
    n = sum(1 for _ in (root / "train").rglob("*.jpg"))
    m = sum(1 for _ in (root / "test").rglob("*.jpg"))
    decoded = (n + m) * 3 * size * size
    return {"exit_code": code, "train_images": n, "image_size": size, "decoded_gb": decoded / 1e9,
            "peak_pss_gb": peak / 1e9, "decoded_vs_peak": decoded / peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("/tmp/sbrun-storage-bench"))
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--big-n", type=int, default=20000)
    ap.add_argument("--big-size", type=int, default=224)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bench-repeats", type=int, default=2)
    ap.add_argument("--bench-subset", type=int, default=4000, help="training examples of the sbrun-bench part")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--skip", nargs="*", default=[], choices=["reads", "bench", "rss"])
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    small = folder(a.data / f"n{a.n}_s{a.size}", a.n, a.size)
    # each part writes its own files; storage.md is assembled from whatever parts exist, so a part
    # rerun alone (--skip the others) keeps the others' last results
    if "reads" not in a.skip:
        reads = read_rates(small, a.size, a.workers, a.batch, a.repeats)
        reads.to_csv(a.out / "reads.csv", index=False)
        (a.out / "reads.md").write_text(
            f"## Reads: one epoch of {a.n} JPEGs at {a.size} px, {a.workers} workers, batch {a.batch}, medians of "
            f"{a.repeats} interleaved rounds (`{' '.join(sys.argv)}`, load before {os.getloadavg()[0]:.2f})\n\n"
            + markdown(reads) + "\n")
    if "bench" not in a.skip:
        subprocess.run([sys.executable, "-m", "sbrun.bench", "--out", str(a.out / "bench"), "--repeats",
                        str(a.bench_repeats), "--scoring", "none", "--loader-workers", str(a.workers),
                        "--preset", "cpu",
                        "dataset=folder", f"dataset.subset={a.bench_subset}", f"dataset.path={small}",
                        f"dataset.image_size={a.size}", "dataset.storage=files", "data_path=loader",
                        f"num_workers={a.workers}", "dataset.channels=3", f"dataset.mean={MEAN}",
                        f"dataset.std={STD}", "dataset.flip=true", "model=cnn", "model.width=8", "batch_size=128"],
                       cwd=REPO, check=True)
    if "rss" not in a.skip:
        big = folder(a.data / f"n{a.big_n}_s{a.big_size}", a.big_n, a.big_size)
        with tempfile.TemporaryDirectory() as tmp:
            rss = pd.DataFrame([peak_memory_epoch(big, a.big_size, a.workers, Path(tmp))])
        rss.to_csv(a.out / "rss.csv", index=False)
    parts = [(a.out / "reads.md").read_text()] if (a.out / "reads.md").exists() else []
    if (a.out / "bench" / "bench.md").exists():
        parts.append(f"## Training with decoding included (sbrun-bench, dataset.storage=files, {a.bench_subset} of "
                     f"the images, cnn width 8)\n\n" + (a.out / "bench" / "bench.md").read_text())
    if (a.out / "rss.csv").exists():
        parts.append("## Peak memory (PSS) of one files epoch, sbrun and its workers\n\n"
                     + markdown(pd.read_csv(a.out / "rss.csv")) + "\n")
    (a.out / "storage.md").write_text("\n".join([f"# Storage benchmark ({os.cpu_count()} CPU cores)", ""] + parts))
    print((a.out / "storage.md").read_text())


if __name__ == "__main__":
    main()
