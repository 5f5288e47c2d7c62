"""What the benchmark reports: bench.csv and bench.md (the variants and references against the
cost model, with the performance goals), scoring.csv (the scoring options), and costs.json plus
costs_<option>.json (the per-example seconds `budget.costs` reads).
"""
from __future__ import annotations

import resource
import statistics
from pathlib import Path
from typing import Dict, List, Optional

import pandas as pd
import torch

from ..build import Parts
from ..proxy import proxy_setup
from ..records import atomic_write, write_json
from ..samplers.rules import cost_model_speedup, expected_fraction
from .epochs import Variant


def scoring_frame(scorers: Dict[str, Parts], variants: Dict[str, Variant], costs: Dict[str, float]) -> pd.DataFrame:
    """Each option's f_sel against fp32 at full scale, and the cost-model bound it allows for SB
    beta=2 and Stale-SB n=3 (at their measured backprop fractions). A proxy's row also pays its own
    training: a step on the selected fraction s of every train_every-th scored chunk adds
    s * proxy f+b / train_every per scored example. `macs_ratio`: its multiply-adds against the main
    model's, what `work` charges it without a measured costs_proxy.json."""
    if not scorers:
        return pd.DataFrame()
    fb = costs["fb"]
    fracs = {name: statistics.median(s["frac"] for s in variants[name].samples) if variants[name].samples
             else expected_fraction(2.0) for name in ("sb beta=2", "stale_sb n=3")}
    ref = costs.get("fp32", costs["f_sel"])

    def row(name: str, p: Parts) -> dict:
        def scoring(frac: float) -> float:       # per scored example, the proxy's training included
            return costs[name] + (0.0 if p.proxy is None else frac * costs[f"{name} proxy_fb"] / p.proxy.train_every)
        out = {"option": name, "scale": p.cfg.scoring.scale, "scoring_precision": p.effective["scoring_precision"],
               "f_sel_us": costs[name] * 1e6, "vs_fp32": costs[name] / ref, "fb_us": fb * 1e6,
               "bound_sb2": cost_model_speedup(scoring(fracs["sb beta=2"]), fb, fracs["sb beta=2"], 1),
               "bound_stale3": cost_model_speedup(scoring(fracs["stale_sb n=3"]), fb, fracs["stale_sb n=3"], 3)}
        if p.proxy is not None:
            out.update(proxy_fb_us=costs[f"{name} proxy_fb"] * 1e6, macs_ratio=p.proxy.cost)
        return out
    return pd.DataFrame([row(name, p) for name, p in scorers.items()])


def bench_table(variants: Dict[str, Variant], refs: Dict[str, List[float]], costs: Dict[str, float],
                info: dict, rounds: int) -> pd.DataFrame:
    trad_med = statistics.median(s["epoch_s"] for s in variants["traditional"].samples)
    n = variants["traditional"].parts.n
    rows = []
    for name, v in variants.items():
        times = [s["epoch_s"] for s in v.samples]
        med = statistics.median(times)
        frac = statistics.median(s["frac"] for s in v.samples)
        staleness = v.cycle if name.startswith("stale") else 1
        predicted = 1.0 if name == "traditional" else cost_model_speedup(costs["f_sel"], costs["fb"], frac, staleness)
        speedup = trad_med / med
        rows.append({"variant": name, "epoch_s_median": med, "epoch_s_min": min(times), "epoch_s_max": max(times),
                     "images_per_s": n / med, "speedup": speedup, "backprop_frac": frac,
                     "predicted_speedup": predicted, "efficiency": speedup / predicted,
                     "loaded_frac": statistics.median(s["loaded_frac"] for s in v.samples),
                     "bound_with_d": bound_with_data(costs, v.samples),
                     "bookkeeping_share": statistics.median(s["bookkeeping_s"] / s["epoch_s"] for s in v.samples),
                     "chunks_per_epoch": statistics.median(s["chunks"] for s in v.samples)})
    for name, times in refs.items():
        if times:
            med = statistics.median(times)
            rows.append({"variant": name, "epoch_s_median": med, "epoch_s_min": min(times),
                         "epoch_s_max": max(times), "images_per_s": n / med, "speedup": trad_med / med})
    df = pd.DataFrame(rows)
    df["f_sel_us"] = costs["f_sel"] * 1e6
    df["fb_us"] = costs["fb"] * 1e6
    df["d_us"] = costs["d"] * 1e6
    df["peak_memory"] = _peak_memory(variants["traditional"].parts.device)
    df["device"] = info["device_name"]
    df["repeats"] = rounds
    return df


def bound_with_data(costs: Dict[str, float], samples: List[dict]) -> float:
    """The cost-model speedup over Traditional with the data term: Traditional reads and trains
    every example, (d + f+b) each; a variant pays d per example it read, f_sel per one it scored
    and f+b per one it backpropagated (its measured fractions)."""
    d, f_sel, fb = costs["d"], costs["f_sel"], costs["fb"]
    med = {k: statistics.median(s[k] for s in samples) for k in ("loaded_frac", "scored_frac", "frac")}
    return (d + fb) / (med["loaded_frac"] * d + med["scored_frac"] * f_sel + med["frac"] * fb)


def write_costs(out_dir: Path, costs: Dict[str, float], scorers: Dict[str, Parts], info: dict) -> None:
    """costs.json (the configured scoring) and costs_<option>.json per scoring option: the per-example
    seconds `budget.costs` reads (f_sel, fb), and where they were measured."""
    keep = ("device", "device_name", "torch", "cuda", "preset", "dataset", "model", "model_kwargs", "image_size",
            "channels", "n_train", "batch_size",
            "select_batch_size", "precision", "channels_last", "data_path", "compile", "cost_samples")
    where = {k: info[k] for k in keep if k in info}
    files = {"costs.json": (costs["f_sel"], info["scoring"])}
    files.update({f"costs_{name}.json": (costs[name], {"scale": p.cfg.scoring.scale,
                                                       "precision": p.effective["scoring_precision"]})
                  for name, p in scorers.items() if p.proxy is None})   # a proxy: below
    for file, (select, scoring) in files.items():
        write_json(out_dir / file, {"f_sel": select, "fb": costs["fb"], "d": costs["d"],
                                    "unit": "seconds per example",
                                    "scoring": scoring, **where})
    for name, p in scorers.items():
        if p.proxy is not None:      # budget.costs=<it> charges the proxy its measured costs
            write_json(out_dir / f"costs_{name}.json", {
                "f_sel": costs["f_sel"], "fb": costs["fb"], "proxy_f_sel": costs[name],
                "proxy_fb": costs[f"{name} proxy_fb"], "unit": "seconds per example", "scoring": info["scoring"],
                "proxy": proxy_setup(p.cfg.scoring.proxy), **where})


def write_tables(out_dir: Path, tables: Dict[str, pd.DataFrame], info: dict, sync_info: Dict[str, float]) -> None:
    atomic_write(out_dir / "bench.csv", tables["bench"].to_csv(index=False).encode())
    if not tables["scoring"].empty:
        atomic_write(out_dir / "scoring.csv", tables["scoring"].to_csv(index=False).encode())
    atomic_write(out_dir / "bench.md", to_markdown(tables["bench"], tables["scoring"], info, sync_info).encode())


def _md_table(df: pd.DataFrame, cols) -> List[str]:
    lines = ["| " + " | ".join(h for _, h, _ in cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        cells = []
        for key, _, fmt in cols:
            v = r.get(key)
            cells.append("–" if v is None or (isinstance(v, float) and v != v) else fmt.format(v))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def to_markdown(df: pd.DataFrame, scoring: Optional[pd.DataFrame] = None, info: Optional[dict] = None,
                sync_info: Optional[Dict[str, float]] = None) -> str:
    cols = [("variant", "variant", "{}"), ("epoch_s_median", "epoch s (median)", "{:.2f}"),
            ("epoch_s_min", "min", "{:.2f}"), ("epoch_s_max", "max", "{:.2f}"),
            ("backprop_frac", "backprop frac", "{:.3f}"), ("speedup", "speedup", "{:.2f}x"),
            ("predicted_speedup", "cost model", "{:.2f}x"), ("efficiency", "efficiency", "{:.2f}"),
            ("loaded_frac", "loaded frac", "{:.3f}"), ("bound_with_d", "bound with d", "{:.2f}x"),
            ("bookkeeping_share", "bookkeeping", "{:.1%}"), ("images_per_s", "images/s", "{:.0f}")]
    lines = _md_table(df, cols)
    first = df.iloc[0]
    info = info or {}
    lines += ["", f"Device: {first['device']}; f_sel = {first['f_sel_us']:.1f} us/example, "
                  f"f+b = {first['fb_us']:.1f} us/example, d = {first['d_us']:.1f} us/example read "
                  f"(medians of {info.get('cost_samples', 1)} timings, one per "
                  f"round and one before); peak memory {first['peak_memory']}; "
                  f"{int(first['repeats'])} interleaved rounds."]
    if info:
        lines.append(f"Setup: {info['dataset']} ({info['n_train']} examples), {info['model']}, batch "
                     f"{info['batch_size']}, precision {info['precision']}, channels_last {info['channels_last']}, "
                     f"data path {info['data_path']}, torch {info['torch']}"
                     + (f", CUDA {info['cuda']}" if info.get("cuda") else "")
                     + f"; load average before {info['load_before']}, after {info.get('load_after', '?')}.")
    lines += ["", *goals(df, sync_info or {}, str(info.get("device", "cpu")))]
    if scoring is not None and not scoring.empty:
        lines += ["", "Scoring options (f_sel per example; cost-model bound at the measured backprop fractions):", ""]
        lines += _md_table(scoring, [("option", "option", "{}"), ("scale", "scoring.scale", "{:g}"),
                                     ("scoring_precision", "scoring precision", "{}"),
                                     ("f_sel_us", "f_sel us/example", "{:.1f}"), ("vs_fp32", "vs fp32", "{:.2f}x"),
                                     ("bound_sb2", "SB beta=2 bound", "{:.2f}x"),
                                     ("bound_stale3", "Stale-SB n=3 bound", "{:.2f}x")]
                          + ([("proxy_fb_us", "proxy f+b us/example", "{:.1f}"),
                              ("macs_ratio", "multiply-add ratio", "{:.3f}x")] if "macs_ratio" in scoring else []))
    return "\n".join(lines) + "\n"


def goals(df: pd.DataFrame, sync_info: Dict[str, float], device: str) -> List[str]:
    """The performance targets (docs/performance.md), read off the table."""
    t = df.set_index("variant")
    trad = t.loc["traditional"]
    sel = t[t.index.str.startswith(("sb", "stale"))]
    out = [f"- SB / Stale-SB efficiency against the cost model (goal >= 0.9): "
           f"{sel['efficiency'].min():.2f}-{sel['efficiency'].max():.2f}",
           f"- selection bookkeeping share of the epoch (goal <= 2%): "
           f"{sel['bookkeeping_share'].min():.1%}-{sel['bookkeeping_share'].max():.1%}"]
    if "plain loop" in t.index:
        out.append(f"- Traditional epoch against the plain loop (goal <= 1.1x): "
                   f"{trad['epoch_s_median'] / t.loc['plain loop', 'epoch_s_median']:.2f}x")
    if "dataloader loop" in t.index:
        out.append(f"- Traditional images/s against the DataLoader pipeline (goal >= 2x on a GPU): "
                   f"{trad['images_per_s'] / t.loc['dataloader loop', 'images_per_s']:.2f}x")
    if sync_info:
        out.append(f"- per-chunk host sync: {sync_info['syncs_per_epoch']} syncs per SB beta=2 epoch x "
                   f"{sync_info['sync_cost_us']:.0f} us each (the plain loop's extra time per step when it syncs "
                   f"after every step) = {sync_info['sync_share']:.1%} of the epoch")
    elif device.startswith("cuda"):
        out.append("- per-chunk host sync: not measured (CUDA's sync debug mode reported no sync)")
    else:
        out.append("- per-chunk host sync: not measured (CPU: every operation is synchronous, a sync drains "
                   "no queue)")
    return out


def _peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB (device)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (process RSS)"
