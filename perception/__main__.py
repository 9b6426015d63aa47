"""``python -m perception`` runs the command-line interface."""

from perception.cli import main

if __name__ == "__main__":
    main()
