"""Queue bounds of the served models, and changing them at serve time.

Every model's Triton queue is bounded (per priority level): a request that would exceed it is
refused at once (UNAVAILABLE "Exceeds maximum queue size") instead of waiting without limit.
``sam_session`` has no Triton queue (its ``execute`` only dispatches) and bounds its own click
lane and embed pool the same way ("sam_session overloaded"); so does ``sam_video`` (SAM 2) its
video lane and its count of tracking sessions. The exporter writes
:class:`QueueLimits` into the configs; ``sam-triton serve --queue NAME=N`` overrides them
for one run without touching the repository: it serves an overlay of it (symlinks to every
file, rewritten ``config.pbtxt`` files where a bound changes). In a repository of several
models (``sam-triton export --name``) a bare NAME applies to each model's own, and
``MODEL.NAME=N`` (``sam2.1-tiny.sam_encoder=8``) to one model's only.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from sam_triton_common.contract import (
    AUTOMASK_MODEL,
    DECODER_MODEL,
    ENCODER_MODEL,
    MODEL_NAME_SEPARATOR,
    SESSION_MODEL,
    VIDEO_MODEL,
    model_of,
)

# --queue names: a model's queue (QueueLimits field), or a bound that is no model's name.
MODEL_QUEUES = {
    ENCODER_MODEL: "encoder",
    DECODER_MODEL: "decoder",
    SESSION_MODEL: "session",
    AUTOMASK_MODEL: "automask",
    VIDEO_MODEL: "video",
}
POOL_PARAMETERS = ("embed_workers", "embed_queue", "video_sessions")
# --queue name -> (model, config parameter) for the bounds a model keeps itself (no Triton queue).
MODEL_PARAMETERS = {
    SESSION_MODEL: (SESSION_MODEL, "click_queue_size"),
    "embed_workers": (SESSION_MODEL, "embed_workers"),
    "embed_queue": (SESSION_MODEL, "embed_queue_size"),
    VIDEO_MODEL: (VIDEO_MODEL, "video_queue_size"),
    "video_sessions": (VIDEO_MODEL, "max_sessions"),
}


@dataclass(frozen=True)
class QueueLimits:
    """Requests that may wait per model and priority level before Triton refuses more
    (``session``: sam_session's click lane, clicks and lookups running or waiting;
    ``video``: sam_video's lane, requests of every stream running or waiting),
    ``sam_session``'s embed pool (encodes at once, and encodes running or waiting), and the
    tracking sessions ``sam_video`` holds at once."""

    encoder: int = 32
    decoder: int = 64
    session: int = 64
    automask: int = 4
    video: int = 64
    embed_workers: int = 2
    embed_queue: int = 16
    video_sessions: int = 16

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < 1:
                raise ValueError(f"queue limit {name} must be >= 1, got {value}")


def _scope(name: str) -> tuple[str | None, str]:
    """(model or None for every model, bound name) of an override's NAME."""
    if name in MODEL_QUEUES or name in POOL_PARAMETERS:
        return None, name
    model, _, bound = name.rpartition(MODEL_NAME_SEPARATOR)
    return (model or None), bound


def parse_queue_overrides(items: list[str], named: bool = False) -> dict[str, int]:
    """``["sam_encoder=64", "embed_workers=4"]`` -> ``{"sam_encoder": 64, ...}`` (ValueError).
    ``named``: NAMEs may also be ``MODEL.NAME`` (one model of several)."""
    known = [*MODEL_QUEUES, *POOL_PARAMETERS]
    overrides: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        model, bound = _scope(name)
        if not sep or bound not in known or (model is not None and not named):
            scoped = " (or MODEL.NAME for one model of several)" if named else ""
            raise ValueError(f"--queue {item!r}: expected NAME=N with NAME one of {', '.join(known)}{scoped}")
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"--queue {item!r}: {value!r} is not an integer") from None
        if number < 1:
            raise ValueError(f"--queue {item!r}: must be >= 1")
        overrides[name] = number
    return overrides


def queue_limits(overrides: dict[str, int], base: QueueLimits | None = None) -> QueueLimits:
    """``base`` (default: the defaults) with parsed ``--queue`` overrides applied."""
    names = {**MODEL_QUEUES, **{k: k for k in POOL_PARAMETERS}}
    valid = {f.name for f in fields(QueueLimits)}
    changes = {names[key]: value for key, value in overrides.items() if names[key] in valid}
    return replace(base or QueueLimits(), **changes)


def _parameter_pattern(key: str) -> re.Pattern[str]:
    return re.compile(rf'(key: "{key}"\s*value \{{\s*string_value: ")\d+(")')


def override_config(model: str, text: str, overrides: dict[str, int]) -> str:
    """A generated config.pbtxt with the overrides that concern ``model`` (a served name,
    ``sam_encoder`` or ``NAME.sam_encoder``) applied."""
    served = model_of(model)
    if served is None:
        return text
    owner, role = served
    for key, value in overrides.items():
        scope, name = _scope(key)
        if scope is not None and scope != owner:
            continue
        if name in MODEL_PARAMETERS:
            keeper, parameter = MODEL_PARAMETERS[name]
            if role == keeper:
                text, count = _parameter_pattern(parameter).subn(rf"\g<1>{value}\g<2>", text)
                if count == 0:
                    raise ValueError(f"{model}/config.pbtxt has no {parameter!r} parameter")
        elif name == role:
            text, count = re.subn(r"(max_queue_size: )\d+", rf"\g<1>{value}", text)
            if count == 0:
                raise ValueError(f"{model}/config.pbtxt has no bounded queue to resize")
    return text


def overlay_repository(repository: Path, overrides: dict[str, int], into: Path) -> Path:
    """A repository at ``into`` that is ``repository`` with ``overrides`` applied: symlinks
    to everything, except rewritten config files. Relative paths inside model parameters
    (``../../sam_decoder/1/model.onnx``) still resolve, since version directories are links."""
    owners = {served[0] for entry in repository.iterdir() if (served := model_of(entry.name)) is not None}
    for key in overrides:
        if (scope := _scope(key)[0]) is not None and scope not in owners:
            named = sorted(owner for owner in owners if owner is not None)
            raise ValueError(f"--queue {key}: {repository} has no model {scope!r} (named models: {named})")
    into.mkdir(parents=True, exist_ok=True)
    for entry in sorted(repository.iterdir()):
        config = entry / "config.pbtxt"
        if not config.is_file():
            (into / entry.name).symlink_to(entry.resolve())
            continue
        text = config.read_text()
        changed = override_config(entry.name, text, overrides)
        if changed == text:
            (into / entry.name).symlink_to(entry.resolve())
            continue
        model_dir = into / entry.name
        model_dir.mkdir()
        for child in entry.iterdir():
            if child.name != "config.pbtxt":
                (model_dir / child.name).symlink_to(child.resolve())
        (model_dir / "config.pbtxt").write_text(changed)
    return into
