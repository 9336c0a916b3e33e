"""The package's one place for Dask: check a client, connect to a cluster.

Why Dask: a search's K starts are independent (start k's trajectory depends only on its
start, its seed and the problem), and a sweep's grid chunks are independent, so both split
into tasks that a Dask cluster runs on many machines, with nothing more than a
``distributed.Client`` to hand them out and gather the results. ``distributed`` is an
optional dependency (``pip install "genni_ext[dask]"``): this module imports it only when
asked, so the rest of the package works without it.

A worker runs the package's own code on what it is sent (a pickled Problem: its model and
tensors), so every worker needs the same genni_ext and torch installed as the client, and
the modules that define a custom model importable (or the model defined where cloudpickle
sends it by value). A Problem on a GPU needs workers with that GPU.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from genni_ext.errors import BackendUnavailableError, InputError

if TYPE_CHECKING:
    from distributed import Client

ADDRESS_FORMS = '"local:N" (a local cluster of N worker processes) or "tcp://HOST:PORT"'
"""The addresses :func:`connect` takes, for messages."""


def require_distributed() -> ModuleType:
    """The ``distributed`` module, or BackendUnavailableError saying how to install it."""
    try:
        return importlib.import_module("distributed")
    except ImportError as error:
        raise BackendUnavailableError(
            f"dask is not installed ({error}); install it with pip install "
            '"genni_ext[dask]" to run on a Dask cluster'
        ) from error


def check_client(client: object) -> Client:
    """Return ``client`` if it is an open ``distributed.Client``, else InputError saying what
    it was (another object, or a client that is closed)."""
    distributed = require_distributed()
    if not isinstance(client, distributed.Client):
        raise InputError(
            f"client must be a distributed.Client, got {type(client).__name__}; create one "
            f"with genni_ext.cluster.connect({ADDRESS_FORMS}) or distributed.Client(...)"
        )
    if client.status in ("closing", "closed"):
        raise InputError(
            f"the Dask client is {client.status} (client.close() was called, or its cluster "
            f"went away); pass an open one: genni_ext.cluster.connect({ADDRESS_FORMS}) or "
            "distributed.Client(...)"
        )
    return client


def _local_workers(address: str) -> int | None:
    """N of "local:N", None for any other form; InputError for a bad N."""
    if not address.startswith("local:"):
        return None
    count = address.removeprefix("local:")
    if not count.isdigit() or int(count) < 1:
        raise InputError(
            f"dask address {address!r} needs a positive number of workers after 'local:', "
            f"e.g. local:4; use {ADDRESS_FORMS}"
        )
    return int(count)


def connect(address: str, *, timeout: float = 30.0) -> Client:
    """A ``distributed.Client`` for ``address``.

    ``"local:N"`` starts a local cluster of N worker processes with one thread each (torch
    parallelises inside a task, so more threads per worker would compete for the cores) and
    no dashboard; closing the client closes that cluster. Its scheduler's and workers' log
    records stay on distributed's own loggers and show only from WARNING up (its INFO lines
    about starting and stopping are not the user's business). ``"tcp://HOST:PORT"`` connects to
    a running scheduler (``dask scheduler``) within ``timeout`` seconds, else
    BackendUnavailableError. Any other address is an InputError that shows both forms.
    """
    if not isinstance(address, str):
        raise InputError(f"dask address must be a string, {ADDRESS_FORMS}; got {address!r}")
    workers = _local_workers(address)
    if workers is None:
        try:
            parts = urlsplit(address)
            port = parts.port
        except ValueError:
            parts, port = None, None
        if parts is None or parts.scheme != "tcp" or not parts.hostname or port is None:
            raise InputError(f"dask address {address!r} is not understood; use {ADDRESS_FORMS}")
    distributed = require_distributed()
    if workers is not None:
        return distributed.Client(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.WARNING,
        )
    try:
        return distributed.Client(address, timeout=timeout)
    except OSError as error:  # TimeoutError and refused connections are OSErrors
        raise BackendUnavailableError(
            f"cannot reach a Dask scheduler at {address} within {timeout:g} s ({error}); "
            "start one there (dask scheduler, then dask worker ADDRESS on each machine) or "
            'use "local:N" for a cluster on this machine'
        ) from error


__all__ = ["ADDRESS_FORMS", "check_client", "connect", "require_distributed"]
