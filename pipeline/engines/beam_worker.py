"""A Beam SDK worker process, started quietly (the Beam engine's multi-processing workers).

Importing apache_beam without its optional GCP libraries logs a warning through the root logger,
which makes Python install a stderr handler; every worker would then print its start-up chatter
on the user's terminal. A handler installed first keeps that from happening: the worker's logs
still reach the driver through Beam's logging service, and a crash still prints its traceback.
"""

import logging
import sys

logging.getLogger().addHandler(logging.NullHandler())

from apache_beam.runners.worker import sdk_worker_main  # noqa: E402

if __name__ == "__main__":
    sdk_worker_main.main(sys.argv)
