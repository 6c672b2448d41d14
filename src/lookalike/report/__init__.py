"""What people look at: the image grids (`grids.py`: sample grid, neighbour grid) and the
bench chart (`figures.py`), for every shell. The demo writes report.md beside them."""
