"""CLI commands of the serve area: ``onepixel serve`` (the MAX-compatible HTTP service)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import typer

from onepixel.cli.common import DeviceOption, ResizeOption, error_text, fail

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        help="The classifier: bundled, a weights name, a .safetensors, .onnx or TorchScript file, "
        "package.module:factory, or the URL of another MAX-style service.",
    ),
]
CertifiedOpt = Annotated[
    bool,
    typer.Option(
        "--certified",
        help="Serve the certified pixel-partition ensemble of --model (bundled: the view-trained "
        "model): probability = the vote share, and every prediction carries certified_radius, the "
        "most pixels no change can use to flip it. Composes with --guard (the detector runs first).",
    ),
]
StrideOpt = Annotated[
    int | None, typer.Option(help="--certified: views are stride x stride strided sub-images (default 4).")
]
HostOpt = Annotated[str, typer.Option(help="Interface to listen on.")]
PortOpt = Annotated[int, typer.Option(help="TCP port (MAX uses 5000).")]
ModeOpt = Annotated[str, typer.Option(help="In-process inference path: auto, eager, jit, ...")]
ThreadsOpt = Annotated[int | None, typer.Option(help="Torch intra-op threads (default: torch's).")]
MaxRequestImagesOpt = Annotated[
    int,
    typer.Option(
        "--max-request-images",
        help="Most images one /model/predict_batch request may carry (413 past it); not to be "
        "confused with --batch-max, the dynamic batcher's model-call size.",
    ),
]
OldMaxBatchOpt = Annotated[int | None, typer.Option("--max-batch", hidden=True)]
MaxUploadOpt = Annotated[int, typer.Option(help="Largest single upload in bytes (413 past it).")]
LogLevelOpt = Annotated[str, typer.Option(help="uvicorn log level.")]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="ONEPIXEL_API_TOKEN",
        show_envvar=True,
        help="Require 'Authorization: Bearer TOKEN' on every request (401 otherwise). Prefer the "
        "environment variable: a command-line token is visible to other users.",
    ),
]
CorsOpt = Annotated[
    list[str] | None,
    typer.Option("--cors-origin", help="Let browser pages from this origin call the API (repeatable; off)."),
]
GuardOpt = Annotated[
    str | None,
    typer.Option(
        help="Detector in front: a guard file from `onepixel guard calibrate` (guard.json), "
        "residual (bundled default threshold) or a VAE name/.safetensors (e.g. vae_amibr)."
    ),
]
GuardThresholdOpt = Annotated[float | None, typer.Option(help="Detector threshold override.")]
BatchMaxOpt = Annotated[
    int,
    typer.Option(
        envvar="ONEPIXEL_BATCH_MAX",
        help="Dynamic batching: most images (or pixel queries) of concurrent requests scored in "
        "one model call (1: off).",
    ),
]
BatchWaitOpt = Annotated[
    float,
    typer.Option(
        envvar="ONEPIXEL_BATCH_WAIT_MS",
        help="Dynamic batching: longest wait (ms) of a model call for requests being read, or "
        "for as many as the last call answered, to join it (a lone client waits at most once, "
        "after a burst).",
    ),
]
MaxInFlightOpt = Annotated[
    int,
    typer.Option(
        envvar="ONEPIXEL_MAX_IN_FLIGHT",
        help="Most concurrent requests at work (body received); past it the service answers 503 "
        "with Retry-After.",
    ),
]
MaxReadingOpt = Annotated[
    int | None,
    typer.Option(
        help="Most concurrent requests still sending their body (default: 4 x --max-in-flight); "
        "past it, 503 with Retry-After.",
    ),
]
MaxCostOpt = Annotated[
    float,
    typer.Option(
        help="Most model passes one request may cost (images or pixel queries x passes each; a "
        "guard adds one per item); 413 past it, before any work is queued.",
    ),
]
ExposeOpt = Annotated[
    bool,
    typer.Option(
        "--expose-guard-details",
        help="Answer the guard's anomaly score, threshold and suspected pixel (and a certified "
        "model's raw votes). Off: an answer says only whether the guard set the image aside "
        "(and the certified radius); the details help an attacker evade the guard.",
    ),
]
MaxHeaderBytesOpt = Annotated[
    int, typer.Option(help="Largest request head (request line + headers) in bytes; 431 past it.")
]
MaxHeadersOpt = Annotated[int, typer.Option(help="Most header lines per request; 431 past it.")]
HeaderTimeoutOpt = Annotated[
    float, typer.Option(help="Seconds a request head may take to arrive; 408 and close past it.")
]
BodyTimeoutOpt = Annotated[
    float,
    typer.Option(
        help="Seconds a request body may take, plus one per --body-min-rate bytes received; 408 "
        "and close past it."
    ),
]
BodyMinRateOpt = Annotated[
    int, typer.Option(help="Bytes per second that extend a body's deadline by one second.")
]
LargeBodyOpt = Annotated[
    int,
    typer.Option(
        help="Bodies larger than this many bytes (or of unknown length) are read --large-body-lane "
        "at a time; the others wait (503 after 10 s)."
    ),
]
LargeBodyLaneOpt = Annotated[int, typer.Option(help="How many large bodies are read at once.")]
ClientConnectionsOpt = Annotated[
    int,
    typer.Option(
        help="Most connections one client address may hold open; past it a new one gets 429 "
        "(Retry-After) and is closed unread. 0: no cap.",
    ),
]
ClientRateOpt = Annotated[
    float,
    typer.Option(
        help="New connections a second one client address may open (sustained; --client-burst "
        "at once); past it 429 and closed unread, so a connection flood costs the server an accept "
        "and a close each. 0: no cap. Keep-alive clients open one connection and are not paced.",
    ),
]
ClientBurstOpt = Annotated[
    int,
    typer.Option(help="New connections one client address may open at once before --client-rate paces it."),
]


@dataclass(frozen=True)
class Limits:
    """The service's bounds, as typed on the command line."""

    max_request_images: int
    max_upload: int
    batch_max: int
    batch_wait_ms: float
    max_in_flight: int
    max_reading: int | None
    max_cost: float
    max_header_bytes: int
    max_headers: int
    header_timeout: float
    body_timeout: float
    body_min_rate: int
    large_body: int
    large_body_lane: int
    client_connections: int
    client_rate: float
    client_burst: int

    def check(self) -> None:
        """Raise typer.BadParameter naming the flags when a bound cannot work."""
        reading_ok = self.max_reading is None or self.max_reading >= 1
        if self.batch_max < 1 or self.batch_wait_ms < 0 or self.max_in_flight < 1 or not reading_ok:
            raise typer.BadParameter(
                "need --batch-max >= 1, --batch-wait-ms >= 0, --max-in-flight >= 1, --max-reading >= 1; "
                f"got {self.batch_max}, {self.batch_wait_ms}, {self.max_in_flight}, {self.max_reading}"
            )

    def head(self) -> Any:
        """Return the request-head limits (typer.BadParameter naming the flags when invalid)."""
        from onepixel.serve.protocol import HeadLimits

        try:
            return HeadLimits(self.max_header_bytes, self.max_headers, self.header_timeout)
        except ValueError as exc:
            hint = "--max-header-bytes / --max-headers / --header-timeout"
            raise typer.BadParameter(str(exc), param_hint=hint) from exc

    def clients(self) -> Any:
        """Return the per-client connection limits (typer.BadParameter naming the flags when invalid)."""
        from onepixel.serve.connections import ClientLimits

        try:
            return ClientLimits(self.client_connections, self.client_rate, self.client_burst)
        except ValueError as exc:
            hint = "--client-connections / --client-rate / --client-burst"
            raise typer.BadParameter(str(exc), param_hint=hint) from exc

    def body(self) -> Any:
        """Return the body-reading limits (typer.BadParameter naming the flags when invalid)."""
        from onepixel.serve.limits import BodyLimits

        try:
            return BodyLimits(
                self.body_timeout, self.body_min_rate, large=self.large_body, lane=self.large_body_lane
            )
        except ValueError as exc:
            hint = "--body-timeout / --body-min-rate / --large-body / --large-body-lane"
            raise typer.BadParameter(str(exc), param_hint=hint) from exc


def resolve_token(token: str | None) -> str | None:
    """Return the bearer token to require (None: no auth); typer.BadParameter when the
    environment's secret failed to load (an empty variable must not switch auth off)."""
    import os

    from onepixel.serve.security import TOKEN_ENV, TokenError, token_from_env

    try:
        from_env = token is None or token == os.environ.get(TOKEN_ENV)
        return token_from_env(None if from_env else token)
    except TokenError as exc:
        raise typer.BadParameter(str(exc), param_hint="--token / $" + TOKEN_ENV) from exc


def served_spec(model: str, certified: bool) -> str:
    """Return the target spec served: ``model``, or its certified ensemble with ``--certified``."""
    if not certified or model.startswith("certified"):
        return model
    return "certified" if model == "bundled" else f"certified:{model}"


def open_served_target(
    model: str, *, mode: str, certified: bool, stride: int | None, device: str = "auto"
) -> Any:
    """Return the target to serve (exit 1 naming --model when it cannot be opened)."""
    from onepixel.targets import TargetError, open_target

    if stride is not None and not certified and not model.startswith("certified"):
        raise typer.BadParameter("--stride needs --certified", param_hint="--stride")
    spec = served_spec(model, certified)
    remote = model.startswith(("http://", "https://"))
    kwargs: dict[str, Any] = {} if remote else {"mode": mode, "device": device}
    if spec.startswith("certified"):
        kwargs["stride"] = stride
    try:
        return open_target(spec, **kwargs)
    except (FileNotFoundError, ValueError, TypeError, TargetError) as exc:
        raise fail(f"cannot open model {spec!r} (--model): {error_text(exc)}") from exc


def open_guard(guard: str | None, threshold: float | None, input_size: int = 64) -> Any:
    """Return the guard built from --guard for a model of ``input_size`` px (None without one;
    exit 1 naming --guard when it cannot be built or was calibrated for another size)."""
    if guard is None:
        return None
    from onepixel.defense.guard import build_guard

    try:
        built = build_guard(guard, threshold)
    except (FileNotFoundError, ValueError) as exc:
        raise fail(f"cannot build guard {guard!r} (--guard): {error_text(exc)}") from exc
    check_guard_size(built, guard, input_size)
    return built


def check_guard_size(built: Any, guard: str, input_size: int) -> None:
    """Exit 1 naming --guard and both sizes unless the guard fits a model of ``input_size`` px:
    a guard file (or bundled threshold) must have been calibrated at that size (64 when it
    records none), and a detector of fixed size (a VAE) must take it."""
    from onepixel.config import IMAGE_SIZE
    from onepixel.defense.guard_file import GuardFileError, sized_detector

    if built.info.get("format"):  # a calibrated document: its threshold holds at its size only
        recorded = int(built.info.get("input_size") or IMAGE_SIZE)
        if recorded != input_size:
            fix = (
                "calibrate a guard file for this model: onepixel guard calibrate --data FOLDER "
                "--target MODEL --out guard.json"
            )
            if not guard.lower().endswith(".json"):
                fix = f"give --guard-threshold, or {fix}"
            raise fail(
                f"cannot serve with --guard {guard}: it was calibrated on {recorded}x{recorded} px "
                f"images but the model takes {input_size}x{input_size}; a threshold does not carry "
                f"over between sizes: {fix}"
            )
    fixed = getattr(built.detector, "image_size", input_size)
    try:
        sized_detector(built.detector, input_size, f"--guard {guard}")
    except GuardFileError:
        raise fail(
            f"cannot serve with --guard {guard}: its detector takes {fixed}x{fixed} px images but "
            f"the model takes {input_size}x{input_size}; use a residual guard calibrated for this "
            "model (onepixel guard calibrate --data FOLDER --target MODEL --out guard.json)"
        ) from None


def run_service(
    target: Any, inspector: Any, limits: Limits, token: str | None, options: dict[str, Any]
) -> None:
    """Build the app with its limits and serve it until interrupted."""
    import uvicorn

    from onepixel.serve import create_app
    from onepixel.serve.protocol import server_config
    from onepixel.serve.security import configure_access_log, harden

    try:
        app = create_app(
            target,
            max_batch=options["max_batch"],
            max_upload_bytes=limits.max_upload,
            guard=inspector,
            batch_max=limits.batch_max,
            batch_wait_ms=limits.batch_wait_ms,
            max_cost=limits.max_cost,
            expose_guard_details=options["expose_guard_details"],
            resize=options["resize"],
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--max-cost") from exc
    harden(
        app,
        token=token,
        cors_origins=options["cors_origins"],
        max_in_flight=limits.max_in_flight,
        max_reading=limits.max_reading,
        body_limits=limits.body(),
    )
    configure_access_log(options["log_level"])
    auth = "bearer token required" if token else "no auth"
    host, port = options["host"], options["port"]
    info = target.info
    size = f"{info.input_size}x{info.input_size}"
    fit = f"resized to {size}" if options["resize"] else f"{size} or larger, centre-cropped"
    typer.echo(
        f"serving {info.name} (positive: {info.positive}) on http://{host}:{port} ({auth}); "
        f"uploads: PNG, JPEG or TIFF, 8-bit RGB, {fit}",
        err=True,
    )
    # Our request log (no bodies) replaces uvicorn's access log.
    config = server_config(
        app, host, port, limits=limits.head(), clients=limits.clients(), log_level=options["log_level"]
    )
    uvicorn.Server(config).run()


def serve(
    model: ModelOpt = "bundled",
    certified: CertifiedOpt = False,
    stride: StrideOpt = None,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 5000,
    mode: ModeOpt = "auto",
    device: DeviceOption = "auto",
    resize: ResizeOption = False,
    threads: ThreadsOpt = None,
    max_request_images: MaxRequestImagesOpt = 1024,
    old_max_batch: OldMaxBatchOpt = None,
    max_upload: MaxUploadOpt = 1 << 20,
    log_level: LogLevelOpt = "info",
    token: TokenOpt = None,
    cors_origin: CorsOpt = None,
    guard: GuardOpt = None,
    guard_threshold: GuardThresholdOpt = None,
    batch_max: BatchMaxOpt = 64,
    batch_wait_ms: BatchWaitOpt = 5.0,
    max_in_flight: MaxInFlightOpt = 256,
    max_reading: MaxReadingOpt = None,
    max_cost: MaxCostOpt = 4096,
    expose_guard_details: ExposeOpt = False,
    max_header_bytes: MaxHeaderBytesOpt = 32 << 10,
    max_headers: MaxHeadersOpt = 100,
    header_timeout: HeaderTimeoutOpt = 10.0,
    body_timeout: BodyTimeoutOpt = 10.0,
    body_min_rate: BodyMinRateOpt = 32 << 10,
    large_body: LargeBodyOpt = 1 << 20,
    large_body_lane: LargeBodyLaneOpt = 4,
    client_connections: ClientConnectionsOpt = 256,
    client_rate: ClientRateOpt = 100.0,
    client_burst: ClientBurstOpt = 200,
) -> None:
    """Serve a classifier with the IBM MAX REST API (plus batch and pixel routes) on HOST:PORT."""
    token = resolve_token(token)
    limits = Limits(
        max_request_images, max_upload, batch_max, batch_wait_ms, max_in_flight, max_reading,
        max_cost, max_header_bytes, max_headers, header_timeout, body_timeout, body_min_rate,
        large_body, large_body_lane, client_connections, client_rate, client_burst,
    )  # fmt: skip
    limits.check()
    limits.head(), limits.body(), limits.clients()  # refuse bad bounds before loading the model
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    target = open_served_target(model, mode=mode, certified=certified, stride=stride, device=device)
    inspector = open_guard(guard, guard_threshold, target.info.input_size)
    options = {
        "max_batch": max_request_images if old_max_batch is None else old_max_batch,
        "expose_guard_details": expose_guard_details,
        "cors_origins": cors_origin or (),
        "log_level": log_level,
        "host": host,
        "port": port,
        "resize": resize,
    }
    run_service(target, inspector, limits, token, options)


def register(app: typer.Typer) -> None:
    """Add this area's commands to app."""
    app.command("serve")(serve)
