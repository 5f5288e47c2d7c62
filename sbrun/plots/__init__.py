"""Figures, drawn from run directories only (filled in by the figures work)."""


def per_run(run_dir) -> None:
    pass
