def test_tiny_run_finishes(run_tiny):
    run_dir, summary = run_tiny()
    assert summary["status"] == "finished"
    assert (run_dir / "metrics.csv").exists()
