"""`sbrun-bench`: how close SB and Stale-SB come to their cost-model speedup.

Per-example costs f_sel (scoring forward) and f+b (training forward + backward + step) are
measured directly; the cost model then predicts the per-epoch speedup over Traditional,
(f+b) / (f_sel/n + s (f+b)), with s the backprop fraction each variant actually had. Every
variant's epochs are measured interleaved with the others (round-robin, `--repeats` rounds), so
drift on a shared machine hits them all alike. Two references run in the same rounds: a plain
hand-written PyTorch loop on the same device-resident data (sbrun's own overhead) and a
torchvision DataLoader pipeline with the same augmentation (what the data path buys). The
scoring options (`scoring.scale`, `scoring.precision`) get their own f_sel and cost-model bound, and
so does a proxy scorer (`--proxy F`: scoring.proxy.width_factor=F), whose bound also pays its training.

Everything runs through sbrun's public pieces: `build.build` for the parts, `loop.run_epoch`,
`loop.score` and `loop.train_forward` for the work, `state.RunState` / `state.EpochState` for the state.
Outputs (in --out): bench.csv, bench.md, scoring.csv, and costs.json (f_sel and f+b, for
`budget.unit=work budget.costs=<it>`), plus costs_<option>.json per scoring option.

Modules, each importing only those before it: probe (the per-example costs; all that
sbrun-compare and budget need), epochs (the timed variants), references (the plain and
DataLoader loops, the host-sync count), report (tables, bench.md, costs.json), rounds (the
benchmark: configs, warm-up, interleaved rounds), cli (`sbrun-bench`, `python -m sbrun.bench`).
This file imports nothing, so sbrun-compare's probe does not load the benchmark.
"""
