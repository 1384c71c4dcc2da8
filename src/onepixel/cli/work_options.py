"""The ``--executor`` / ``--address`` / ``--workers`` options of commands that map work over a
target (``confmap``, ``certify``), and the executor they ask for."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from onepixel.cli.common import fail


def executor_option(work: str) -> Any:
    """Return the ``--executor`` option type for a command whose unit of ``work`` is named."""
    return Annotated[
        str,
        typer.Option(
            "--executor",
            help=f"Where {work} run: local (this process, the default) or ray (Ray workers that each "
            "open --target themselves; this process merges their results, the same as local; "
            "needs pip install 'onepixel\\[ray]').",
        ),
    ]


RayAddressOption = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="With --executor ray: the cluster to join (auto, ray://head:10001); default: start one.",
    ),
]
RayWorkersOption = Annotated[
    int | None,
    typer.Option(
        "--workers", min=1, help="With --executor ray: workers (default: one per CPU of the cluster)."
    ),
]


def open_executor(
    executor: str, address: str | None, workers: int | None, device: str, threads: int | None = 1
) -> Any:
    """Return the executor of the flags (None: local, here), or raise the CLI error naming the flag.

    Ray workers open the target with ``--device`` and use ``threads`` torch threads each.
    """
    from onepixel.attack.executors import make_executor
    from onepixel.errors import OnePixelError

    try:
        if executor == "local":
            make_executor("local", address, workers=workers)  # refuses --address / --workers
            return None
        options: dict[str, Any] = {"target_options": {"device": device}, "threads_per_worker": threads}
        if workers is not None:
            options["workers"] = workers
        return make_executor(executor, address, **options)
    except OnePixelError as exc:
        raise fail(exc) from None
