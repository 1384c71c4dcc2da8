"""CLI commands of the serve area: ``onepixel serve`` (the MAX-compatible HTTP service)."""

from __future__ import annotations

from typing import Annotated

import typer

from onepixel.cli.common import error_text, fail


def serve(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="Bundled weights name, a .safetensors file, or the URL of another MAX-style service.",
        ),
    ] = "bundled",
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (MAX uses 5000).")] = 5000,
    mode: Annotated[str, typer.Option(help="In-process inference path: auto, eager, jit, ...")] = "auto",
    threads: Annotated[int | None, typer.Option(help="Torch intra-op threads (default: torch's).")] = None,
    max_request_images: Annotated[
        int,
        typer.Option(
            "--max-request-images",
            help="Most images one /model/predict_batch request may carry (413 past it); not to be "
            "confused with --batch-max, the dynamic batcher's model-call size.",
        ),
    ] = 1024,
    old_max_batch: Annotated[int | None, typer.Option("--max-batch", hidden=True)] = None,
    max_upload: Annotated[int, typer.Option(help="Largest single upload in bytes (413 past it).")] = 1 << 20,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="ONEPIXEL_API_TOKEN",
            show_envvar=True,
            help="Require 'Authorization: Bearer TOKEN' on every request (401 otherwise). Prefer the "
            "environment variable: a command-line token is visible to other users.",
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin", help="Let browser pages from this origin call the API (repeatable; off)."
        ),
    ] = None,
    guard: Annotated[
        str | None,
        typer.Option(
            help="Detector in front: a guard file from `onepixel guard calibrate` (guard.json), "
            "residual (bundled default threshold) or a VAE name/.safetensors (e.g. vae_amibr)."
        ),
    ] = None,
    guard_threshold: Annotated[float | None, typer.Option(help="Detector threshold override.")] = None,
    batch_max: Annotated[
        int,
        typer.Option(
            envvar="ONEPIXEL_BATCH_MAX",
            help="Dynamic batching: most images (or pixel queries) of concurrent requests scored in "
            "one model call (1: off).",
        ),
    ] = 64,
    batch_wait_ms: Annotated[
        float,
        typer.Option(
            envvar="ONEPIXEL_BATCH_WAIT_MS",
            help="Dynamic batching: longest wait (ms) of a model call for requests being read, or "
            "for as many as the last call answered, to join it (a lone client waits at most once, "
            "after a burst).",
        ),
    ] = 5.0,
    max_in_flight: Annotated[
        int,
        typer.Option(
            envvar="ONEPIXEL_MAX_IN_FLIGHT",
            help="Most concurrent requests at work (body received); past it the service answers 503 "
            "with Retry-After.",
        ),
    ] = 256,
    max_reading: Annotated[
        int | None,
        typer.Option(
            help="Most concurrent requests still sending their body (default: 4 x --max-in-flight); "
            "past it, 503 with Retry-After.",
        ),
    ] = None,
    max_cost: Annotated[
        float,
        typer.Option(
            help="Most model passes one request may cost (images or pixel queries x passes each; a "
            "guard adds one per item); 413 past it, before any work is queued.",
        ),
    ] = 4096,
    expose_guard_details: Annotated[
        bool,
        typer.Option(
            "--expose-guard-details",
            help="Answer the guard's anomaly score, threshold and suspected pixel (and a certified "
            "model's raw votes). Off: an answer says only whether the guard set the image aside "
            "(and the certified radius); the details help an attacker evade the guard.",
        ),
    ] = False,
    max_header_bytes: Annotated[
        int, typer.Option(help="Largest request head (request line + headers) in bytes; 431 past it.")
    ] = 32 << 10,
    max_headers: Annotated[int, typer.Option(help="Most header lines per request; 431 past it.")] = 100,
    header_timeout: Annotated[
        float, typer.Option(help="Seconds a request head may take to arrive; 408 and close past it.")
    ] = 10.0,
    body_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds a request body may take, plus one per --body-min-rate bytes received; 408 "
            "and close past it."
        ),
    ] = 10.0,
    body_min_rate: Annotated[
        int, typer.Option(help="Bytes per second that extend a body's deadline by one second.")
    ] = 32 << 10,
    large_body: Annotated[
        int,
        typer.Option(
            help="Bodies larger than this many bytes (or of unknown length) are read --large-body-lane "
            "at a time; the others wait (503 after 10 s)."
        ),
    ] = 1 << 20,
    large_body_lane: Annotated[int, typer.Option(help="How many large bodies are read at once.")] = 4,
) -> None:
    """Serve a classifier with the IBM MAX REST API (plus batch and pixel routes) on HOST:PORT."""
    import os

    import uvicorn

    from onepixel.serve import create_app
    from onepixel.serve.security import TOKEN_ENV, TokenError, token_from_env
    from onepixel.targets import TargetError, open_target

    # typer ignores an empty environment variable: check it here, so a secret that failed to
    # load stops the service instead of switching auth off.
    try:
        from_env = token is None or token == os.environ.get(TOKEN_ENV)
        token = token_from_env(None if from_env else token)
    except TokenError as exc:
        raise typer.BadParameter(str(exc), param_hint="--token / $" + TOKEN_ENV) from exc
    reading_ok = max_reading is None or max_reading >= 1
    if batch_max < 1 or batch_wait_ms < 0 or max_in_flight < 1 or not reading_ok:
        raise typer.BadParameter(
            f"need --batch-max >= 1, --batch-wait-ms >= 0, --max-in-flight >= 1, --max-reading >= 1; got "
            f"{batch_max}, {batch_wait_ms}, {max_in_flight}, {max_reading}"
        )
    from onepixel.serve.limits import BodyLimits
    from onepixel.serve.protocol import HeadLimits

    try:
        head_limits = HeadLimits(max_header_bytes, max_headers, header_timeout)
    except ValueError as exc:
        hint = "--max-header-bytes / --max-headers / --header-timeout"
        raise typer.BadParameter(str(exc), param_hint=hint) from exc
    try:
        body_limits = BodyLimits(body_timeout, body_min_rate, large=large_body, lane=large_body_lane)
    except ValueError as exc:
        hint = "--body-timeout / --body-min-rate / --large-body / --large-body-lane"
        raise typer.BadParameter(str(exc), param_hint=hint) from exc

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    remote = model.startswith(("http://", "https://"))
    try:
        target = open_target(model) if remote else open_target(model, mode=mode)
    except (FileNotFoundError, ValueError, TypeError, TargetError) as exc:
        raise fail(f"cannot open model {model!r}: {exc}") from exc
    inspector = None
    if guard is not None:
        from onepixel.defense.guard import build_guard

        try:
            inspector = build_guard(guard, guard_threshold)
        except (FileNotFoundError, ValueError) as exc:
            raise fail(f"cannot build guard {guard!r}: {error_text(exc)}") from exc
    try:
        app = create_app(
            target,
            max_batch=max_request_images if old_max_batch is None else old_max_batch,
            max_upload_bytes=max_upload,
            guard=inspector,
            batch_max=batch_max,
            batch_wait_ms=batch_wait_ms,
            max_cost=max_cost,
            expose_guard_details=expose_guard_details,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--max-cost") from exc
    from onepixel.serve.protocol import server_config
    from onepixel.serve.security import configure_access_log, harden

    harden(
        app,
        token=token,
        cors_origins=cors_origin or (),
        max_in_flight=max_in_flight,
        max_reading=max_reading,
        body_limits=body_limits,
    )
    configure_access_log(log_level)
    auth = "bearer token required" if token else "no auth"
    typer.echo(
        f"serving {target.info.name} (positive: {target.info.positive}) on http://{host}:{port} ({auth})",
        err=True,
    )
    # Our request log (no bodies) replaces uvicorn's access log.
    uvicorn.Server(server_config(app, host, port, limits=head_limits, log_level=log_level)).run()


def register(app: typer.Typer) -> None:
    """Add this area's commands to app."""
    app.command("serve")(serve)
