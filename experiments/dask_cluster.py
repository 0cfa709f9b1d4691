"""The Dask cluster that sweeps and split replays run on: an existing scheduler, or a local
cluster of worker processes on the loopback interface (no fixed ports)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from traces.infra.errors import InputError

SCHEDULER_ADDRESS = re.compile(r"^(tcp|tls)://[A-Za-z0-9.\-\[\]:]+:(\d{1,5})$")
SCHEDULER_TIMEOUT_S = 10


def check_scheduler_address(scheduler: str) -> str:
    """``scheduler`` if it looks like ``tcp://HOST:PORT`` (or ``tls://``), else InputError."""
    m = SCHEDULER_ADDRESS.match(scheduler)
    if m is None or not 0 < int(m.group(2)) < 65536:
        raise InputError(f"--scheduler {scheduler}: not an address like tcp://HOST:PORT")
    return scheduler


def connect_scheduler(scheduler: str) -> Any:
    """A Dask client of the scheduler at ``scheduler``, or one line saying why not (fast)."""
    from dask.distributed import Client

    check_scheduler_address(scheduler)
    try:
        return Client(scheduler, timeout=f"{SCHEDULER_TIMEOUT_S}s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(
            f"--scheduler {scheduler}: no Dask scheduler answered within {SCHEDULER_TIMEOUT_S} s"
            f" ({type(exc).__name__}); check the address and that the scheduler runs"
        ) from None


def local_cluster(workers: int, processes: bool = True) -> Any:
    """A fresh local cluster of ``workers`` single-threaded workers on the loopback interface
    (``processes=False``: threads of this process, as the tests use; a context manager).

    Every port is the OS's choice, never a fixed one (8786/8787 may be taken): the scheduler's,
    and its HTTP server's, which Dask starts even with the dashboard off and binds to 8787
    unless told otherwise."""
    import logging

    from dask.distributed import LocalCluster

    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=processes,
        protocol="tcp",
        host="127.0.0.1",
        scheduler_port=0,
        dashboard_address=None,  # no dashboard ...
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},  # ... and no fixed HTTP port
        silence_logs=logging.ERROR,
    )


@contextmanager
def local_client(workers: int, processes: bool = True) -> Iterator[Any]:
    """A client of a fresh :func:`local_cluster` (both closed on exit)."""
    from dask.distributed import Client

    cluster = local_cluster(workers, processes)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
