"""`python -m perception.cli` (also what `torchrun -m perception.cli train ...` runs)."""

from perception.cli import main

if __name__ == "__main__":
    main()
