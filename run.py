"""Entry point: python run.py [--config FILE] [--cycles N] [--interval S] [--live] [check|report]."""
import os
import sys

from vigil.cli import main

if __name__ == "__main__":
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # the reader left early (`report | head`): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush does not fail again
        code = 1
    sys.exit(code)
