"""The critic server's wire format: batches of :class:`Request` as one ``.npz`` body.

An ``.npz`` (numpy's zip of arrays) carries the tensors without pickling, so a server never runs
code from a request: ``np.load(..., allow_pickle=False)``. A JSON header rides along as a string
array. Keys: ``header`` and, per request ``i``, ``input_ids.i``, ``mm_token_type_ids.i`` and, when
the request has video, ``pixel_values_videos.i``, ``video_grid_thw.i`` and ``video.i.j`` (raw
frames, only for engines that want them).
"""

from __future__ import annotations

import io
import json
import threading
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from rollout.engine import InvalidRequestError, Request

# The header a client's POSTs carry: the id of the model it built them for (``/v1/model``'s
# ``model_id``); a server now serving another model answers them 409.
MODEL_HEADER = "X-VisCritic-Model"
_FIELDS = ("input_ids", "mm_token_type_ids", "pixel_values_videos", "video_grid_thw")
# numpy parses .npy headers with ast.literal_eval, and CPython 3.11's AST constructor is not
# thread-safe ("SystemError: AST constructor recursion depth mismatch", CPython gh-106905): seen
# here with 8 server threads decoding at once. Decoding is fast; one at a time costs nothing.
_NPY_HEADER_LOCK = threading.Lock()


def encode_requests(
    requests: Sequence[Request], header: dict[str, Any], *, videos: bool = False
) -> bytes:
    """Serialise ``requests`` and a JSON-able ``header``; raw frames only if ``videos``."""
    arrays: dict[str, np.ndarray] = {"header": np.array(json.dumps({**header, "n": len(requests)}))}
    for i, request in enumerate(requests):
        for name in _FIELDS:
            value = getattr(request, name)
            if value is not None:
                arrays[f"{name}.{i}"] = _numpy(value)
        if videos and request.videos is not None:
            for j, frames in enumerate(request.videos):
                arrays[f"video.{i}.{j}"] = np.asarray(frames)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def decode_requests(body: bytes) -> tuple[list[Request], dict[str, Any]]:
    """Inverse of :func:`encode_requests` (torch tensors back).

    Raises:
        InvalidRequestError: the body is not such an archive, or a field is missing.
    """
    import torch

    if not body.startswith(b"PK"):  # a zip's magic; np.load would try to unpickle anything else
        raise InvalidRequestError(
            "the body is not a request archive (an .npz); send what rollout.wire.encode_requests "
            "makes"
        )
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as members:
            packed = [
                i.filename for i in members.infolist() if i.compress_type != zipfile.ZIP_STORED
            ]
        if packed:  # a 600 KB body of compressed zeros unpacked to 600 MB in the server
            raise InvalidRequestError(
                f"the request archive holds compressed members {packed[:3]}; send them stored, "
                "as rollout.wire.encode_requests does (np.savez, not np.savez_compressed)"
            )
        with _NPY_HEADER_LOCK:
            archive = np.load(io.BytesIO(body), allow_pickle=False)
            arrays = {name: archive[name] for name in archive.files}
        header = json.loads(str(arrays.pop("header")))
        if not isinstance(header, dict) or not isinstance(header.get("n"), int):
            raise InvalidRequestError("the header must be a JSON object with an integer 'n'")
        requests = []
        for i in range(header["n"]):
            fields = {
                name: torch.from_numpy(arrays[f"{name}.{i}"])
                for name in _FIELDS
                if f"{name}.{i}" in arrays
            }
            for name in _FIELDS[:2]:
                if name not in fields:
                    raise InvalidRequestError(f"request {i} has no {name}")
            keys = [a for a in arrays if a.startswith(f"video.{i}.")]
            frames = [arrays[k] for k in sorted(keys, key=lambda k: int(k.rsplit(".", 1)[1]))]
            requests.append(Request(**fields, videos=tuple(frames) if frames else None))
    except InvalidRequestError:
        raise
    # MemoryError: an array header claiming 2**40 items; RecursionError: a JSON header nested
    # 100k deep (each was a 500, not the 400 a malformed call gets)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError, MemoryError,
            RecursionError) as exc:  # fmt: skip
        raise InvalidRequestError(
            f"the body is not a request archive ({type(exc).__name__}: {exc}); send what "
            "rollout.wire.encode_requests makes"
        ) from exc
    return requests, header


def _numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()  # numpy has no bfloat16; the server casts to its model's dtype
        return value.numpy()
    return np.asarray(value)
