"""Research-workflow helpers behind `notebooks/*.ipynb`: every notebook cell calls into here,
so the logic is tested like the rest of the package and the notebooks stay thin."""
