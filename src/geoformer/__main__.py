"""`python -m geoformer ...` (also what `torchrun -m geoformer` runs)."""

from geoformer.cli import main

if __name__ == "__main__":
    main()
