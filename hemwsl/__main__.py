"""``python -m hemwsl``: the hemwsl command line."""

from hemwsl.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
