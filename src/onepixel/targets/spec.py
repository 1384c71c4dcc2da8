"""How a foreign model wants its input and what its output means: the preprocessing/output spec.

A spec is a small JSON object, usually a sidecar next to the model file (``model.onnx`` ->
``model.json``)::

    {
      "name": "my-classifier",          # shown in reports (default: the file name)
      "input_size": 96,                 # square input, pixels (default: the ONNX file's own
                                        # fixed input shape, else 64)
      "layout": "NCHW",                 # or "NHWC" (Keras / TensorFlow)
      "channel_order": "RGB",           # or "BGR" (OpenCV, Caffe)
      "value_range": [0, 1],            # uint8 0..255 is mapped linearly onto this range ...
      "mean": [0, 0, 0],                # ... then (x - mean) / std per channel (in channel_order)
      "std": [1, 1, 1],
      "output": "logit",                # logit | probability | softmax
      "positive_index": 1,              # column of the positive class when the output has columns
      "labels": ["Normal", "Atypical"]  # class names, in the order of the output columns
    }

Output kinds: ``logit`` is one raw logit per image (sigmoid gives the score); ``probability``
is one probability per image, or one column per class already summing to 1 (the score is column
``positive_index``); ``softmax`` is one raw logit per class (softmax, then column
``positive_index``). For a one-value output the positive label is ``labels[positive_index]``
and the other label is the negative one. Every key is optional; the defaults are those of the
bundled model exported by ``onepixel model export``.

With one column per class, :meth:`ModelSpec.probabilities` gives every class's probability (the
``labels`` are the class names, in column order) and the score is column ``positive_index``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from onepixel.targets.base import TargetError

OUTPUT_KINDS = ("logit", "probability", "softmax")
LAYOUTS = ("NCHW", "NHWC")
CHANNEL_ORDERS = ("RGB", "BGR")
FILE_SUFFIXES = (".onnx", ".pt", ".pth", ".ts", ".torchscript")
# Input size of a spec that states none and a model whose input shape is not fixed.
DEFAULT_INPUT_SIZE = 64
_CALLABLE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class SpecError(TargetError, ValueError):
    """A preprocessing/output spec that cannot be used (unknown key, bad value, wrong output)."""


@dataclass(frozen=True)
class ModelSpec:
    """Preprocessing and output convention of a foreign classifier (see the module docstring)."""

    name: str = ""
    input_size: int | None = None  # None: not stated (the model's fixed shape, else 64)
    layout: str = "NCHW"
    channel_order: str = "RGB"
    value_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    output: str = "logit"
    positive_index: int = 1
    labels: tuple[str, ...] = field(default=("Normal", "Atypical"))

    def __post_init__(self) -> None:
        problems = []
        if self.input_size is not None and (not isinstance(self.input_size, int) or self.input_size < 1):
            problems.append(f"input_size must be a positive integer, got {self.input_size!r}")
        if self.layout not in LAYOUTS:
            problems.append(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.channel_order not in CHANNEL_ORDERS:
            problems.append(f"channel_order must be one of {CHANNEL_ORDERS}, got {self.channel_order!r}")
        if self.output not in OUTPUT_KINDS:
            problems.append(f"output must be one of {OUTPUT_KINDS}, got {self.output!r}")
        if len(self.value_range) != 2 or self.value_range[0] == self.value_range[1]:
            problems.append(f"value_range must be two different numbers, got {list(self.value_range)}")
        if len(self.mean) != 3 or len(self.std) != 3:
            problems.append("mean and std must have three values (one per channel)")
        elif any(s == 0 for s in self.std):
            problems.append(f"std must not contain 0, got {list(self.std)}")
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            problems.append(f"labels must be at least two distinct names, got {list(self.labels)}")
        elif not 0 <= self.positive_index < len(self.labels):
            problems.append(f"positive_index {self.positive_index} is not an index into labels")
        if problems:
            raise SpecError("bad model spec: " + "; ".join(problems))

    @property
    def size(self) -> int:
        """Return the square input size in pixels: ``input_size``, else :data:`DEFAULT_INPUT_SIZE`."""
        return self.input_size if self.input_size is not None else DEFAULT_INPUT_SIZE

    def with_model_size(self, model_size: int | None, *, where: str) -> ModelSpec:
        """Return the spec checked against the model's own fixed input size ``model_size``.

        None (a dynamic or unknown shape) keeps the spec; a spec without ``input_size`` takes the
        model's; a spec whose ``input_size`` differs raises :class:`SpecError` naming ``where``.
        """
        if model_size is None:
            return self
        if self.input_size is None:
            return replace(self, input_size=model_size)
        if self.input_size != model_size:
            raise SpecError(
                f"{where}: the model's input is fixed at {model_size}x{model_size} but its spec says "
                f"input_size {self.input_size}; correct input_size in the spec (or leave it out)"
            )
        return self

    @property
    def positive(self) -> str:
        """Return the positive label (the score is its probability)."""
        return self.labels[self.positive_index]

    @property
    def negative(self) -> str:
        """Return the negative label: label 0 unless that is the positive one, then label 1."""
        return self.labels[1] if self.positive_index == 0 else self.labels[0]

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, where: str = "spec") -> ModelSpec:
        """Return the spec in ``raw``, raising :class:`SpecError` naming ``where`` on bad input."""
        if not isinstance(raw, dict):
            raise SpecError(f"{where}: a model spec is a JSON object, got {type(raw).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise SpecError(f"{where}: unknown spec key(s) {unknown}; known: {sorted(known)}")
        values = dict(raw)
        try:
            for key in ("value_range", "mean", "std"):
                if key in values:
                    values[key] = tuple(float(v) for v in values[key])
            if "labels" in values:
                values["labels"] = tuple(str(v) for v in values["labels"])
            for key in ("input_size", "positive_index"):
                if key in values and not (key == "input_size" and values[key] is None):
                    if isinstance(values[key], bool) or float(values[key]) != int(values[key]):
                        raise ValueError(f"{key} must be an integer")
                    values[key] = int(values[key])
            for key in ("layout", "channel_order", "output"):
                if key in values:
                    values[key] = str(values[key]).strip()
            values["layout"] = values.get("layout", "NCHW").upper()
            values["channel_order"] = values.get("channel_order", "RGB").upper()
            return cls(**values)
        except SpecError as exc:
            raise SpecError(f"{where}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise SpecError(f"{where}: bad model spec ({exc})") from None

    @classmethod
    def from_json(cls, path: str | Path) -> ModelSpec:
        """Return the spec stored in the JSON file ``path``."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise SpecError(f"model spec {path} does not exist") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise SpecError(f"model spec {path} is not readable JSON ({exc})") from None
        return cls.from_dict(raw, where=str(path))

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as a JSON-ready dict."""
        out = asdict(self)
        for key in ("value_range", "mean", "std", "labels"):
            out[key] = list(out[key])
        return out

    def write(self, path: str | Path) -> Path:
        """Write the spec as JSON to ``path`` and return the path."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """Return uint8 NHWC RGB images as the float32 array the model takes (layout, range, norm)."""
        x = images.astype(np.float32)
        if self.channel_order == "BGR":
            x = x[..., ::-1]
        lo, hi = self.value_range
        scale = np.float32((hi - lo) / 255.0)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        x = (x * scale + np.float32(lo) - mean) / std
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=np.float32)

    def scores(self, output: np.ndarray, n: int) -> np.ndarray:
        """Return the positive-class scores (n,) float64 from the model's raw ``output``.

        Raises :class:`SpecError` when the output's shape or values do not fit the spec.
        """
        return self.probabilities(output, n)[:, self.positive_index]

    def probabilities(self, output: np.ndarray, n: int) -> np.ndarray:
        """Return every class's probability (n, len(labels)) float64 from the model's raw ``output``.

        A one-value output (logit or probability of ``labels[positive_index]``) needs exactly two
        labels: the other column is one minus it. Raises :class:`SpecError` when the output's
        shape or values do not fit the spec.
        """
        out = np.asarray(output, dtype=np.float64)
        if out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        if out.ndim == 1:
            if out.shape != (n,):
                raise SpecError(f"model returned {out.shape[0]} values for {n} images")
            if self.output == "softmax":
                raise SpecError("output 'softmax' needs one column per class; the model returned one value")
            if len(self.labels) != 2:
                raise SpecError(
                    f"the model returned one value per image but the spec names {len(self.labels)} "
                    "labels; a one-value output has two classes"
                )
            p = 1.0 / (1.0 + np.exp(-out)) if self.output == "logit" else self._check_probability(out)
            columns = np.empty((n, 2), dtype=np.float64)
            columns[:, self.positive_index] = p
            columns[:, 1 - self.positive_index] = 1.0 - p
            return columns
        if out.ndim != 2 or out.shape[0] != n:
            raise SpecError(f"model returned an output of shape {out.shape} for {n} images")
        if out.shape[1] != len(self.labels):
            raise SpecError(
                f"model returned {out.shape[1]} columns but the spec names {len(self.labels)} labels"
            )
        if self.output == "logit":
            raise SpecError("output 'logit' means one value per image; for one logit per class use 'softmax'")
        if self.output == "softmax":
            shifted = out - out.max(axis=1, keepdims=True)
            exp = np.exp(shifted)
            return exp / exp.sum(axis=1, keepdims=True)
        return self._check_probability(out)

    @staticmethod
    def _check_probability(p: np.ndarray) -> np.ndarray:
        if not np.all((p >= 0.0) & (p <= 1.0)):
            bad = p[~((p >= 0.0) & (p <= 1.0))].flat[0]
            raise SpecError(f"output 'probability' must lie in [0, 1], got {bad}; is it a logit?")
        return p


def sidecar_path(model_path: str | Path) -> Path:
    """Return the sidecar spec path of a model file: the same name with ``.json``."""
    return Path(model_path).with_suffix(".json")


def is_model_file(spec: str) -> bool:
    """Return True when ``spec`` names a foreign model file (.onnx, or TorchScript .pt/.pth/.ts)."""
    return Path(spec).suffix.lower() in FILE_SUFFIXES


def is_callable_spec(spec: str) -> bool:
    """Return True when ``spec`` has the ``package.module:factory`` form."""
    return bool(_CALLABLE.match(spec))


def is_foreign(spec: str) -> bool:
    """Return True when ``spec`` names a foreign model: a model file or a ``module:factory``."""
    text = str(spec).strip()
    return is_model_file(text) or is_callable_spec(text)


def canonical(spec: str) -> str:
    """Return a foreign spec in the form stored in a run config (model files made absolute)."""
    text = str(spec).strip()
    return str(Path(text).expanduser().resolve()) if is_model_file(text) else text


def fingerprint(spec: str) -> str | None:
    """Return the first 16 hex digits of the SHA-256 of a model file and its sidecar.

    None for a ``module:factory`` spec (its weights live in code). Raises SpecError when the
    file does not exist.
    """
    import hashlib

    text = str(spec).strip()
    if not is_model_file(text):
        return None
    path = Path(text).expanduser()
    if not path.is_file():
        raise SpecError(f"model file {path} does not exist")
    digest = hashlib.sha256(path.read_bytes())
    side = sidecar_path(path)
    if side.is_file():
        digest.update(side.read_bytes())
    return digest.hexdigest()[:16]
