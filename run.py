"""Entry point: python run.py [--config FILE] [--cycles N] [--interval S] [--live] [check|report]."""
import sys

from vigil.cli import main

if __name__ == "__main__":
    sys.exit(main())
