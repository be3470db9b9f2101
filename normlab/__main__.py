"""``python -m normlab``: see :mod:`normlab.cli`."""

import signal

from normlab.cli import EXIT_INTERRUPTED, main

if __name__ == "__main__":
    exit_code = main()
    if exit_code == EXIT_INTERRUPTED:
        # The message is out and the runs are saved: a further Ctrl-C while the
        # interpreter shuts down must not add a traceback or change the exit code.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise SystemExit(exit_code)
