"""What people look at: figures (image grids, result grids, bench charts) and report.md."""
