"""Entry point: python run.py [--config FILE] [--cycles N] [--interval S] [--live] [check|report]."""
import os
import sys

if sys.version_info < (3, 11):  # numpy 2.4 and the code itself need 3.11: say so in one line, not a traceback
    print(f"vigil: Python 3.11 or newer is needed, this is {sys.version.split()[0]}", file=sys.stderr)
    sys.exit(2)

from vigil.cli import main  # noqa: E402

if __name__ == "__main__":
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # the reader left early (`report | head`): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush does not fail again
        code = 1
    sys.exit(code)
