"""
Database helpers shared by the apps.

`statement_deadline` bounds the database time of a block of work inside a web request, so the
request answers (with `Unavailable`) before the web server's worker timeout kills it and the
client gets an HTML 500.
"""

import time
from contextlib import contextmanager

from django.db import OperationalError, connection, transaction

from .errors import Unavailable


@contextmanager
def statement_deadline(seconds: float, *, detail: str, code: str = "timeout"):
    """Run the block in one transaction whose statements must all finish within `seconds`.

    On PostgreSQL each statement runs under `SET LOCAL statement_timeout` set to the time left,
    so the bound is on the whole block, lock waits included, not per statement. Elsewhere the
    deadline is checked before each statement. Past it, raises `Unavailable(detail, code)` and
    the transaction rolls back.
    """
    deadline = time.monotonic() + seconds
    postgres = connection.vendor == "postgresql"

    def bounded(execute, sql, params, many, context):
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            raise Unavailable(detail, code=code)
        if postgres:
            # The raw cursor: this statement must not pass through this wrapper again.
            context["cursor"].cursor.execute(f"SET LOCAL statement_timeout = {left_ms}")
        try:
            return execute(sql, params, many, context)
        except OperationalError as error:
            if type(error.__cause__).__name__ == "QueryCanceled":
                raise Unavailable(detail, code=code) from error
            raise

    with transaction.atomic(), connection.execute_wrapper(bounded):
        yield
