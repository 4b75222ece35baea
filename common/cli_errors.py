"""One-line errors and non-zero exits for both CLIs."""

from __future__ import annotations

import functools
from collections.abc import Callable

import click

from common.config import ConfigError
from common.crypto import CryptoError


def one_line_errors(fn: Callable) -> Callable:
    """Turn expected failures (bad config, bad input, wrong keys) into 'error: …' and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ConfigError, CryptoError, FileNotFoundError, FileExistsError, ValueError) as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise click.ClickException(message) from None

    return wrapper
