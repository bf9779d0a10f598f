"""`python -m wsseg` runs the command-line interface."""

from wsseg.cli import main

if __name__ == "__main__":
    main()
