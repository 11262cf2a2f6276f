"""TEI's `/embed_sparse` contract: the request it takes, the response it gives, its error codes and body.

Followed from text-embeddings-inference's router (router/src/http/{server,types}.rs, v1.9): the
request is `{"inputs": str | [str], "truncate": bool | null, "truncation_direction": "right" |
"left"}` (unknown fields ignored, `truncate` null or absent meaning the server's --auto-truncate,
true by default); the response is one list per input of `{"index", "value"}` for each non-zero
weight, indices ascending; an error is `{"error": message, "error_type": kind}` with TEI's kinds.
Status codes: 400 for an empty input ("Empty"), 413 for too many inputs or too large a body, 422 for
a malformed body, invalid input or a text over max_length with truncation off ("Validation"), 429
when the queue is full ("Overloaded"), 424 when encoding fails ("Backend"), 401 for a missing or
wrong API key. TEI up to 1.8 answered every "Validation" error with 413, and since 1.9 with 422;
here the size limits keep 413, what TEI's own API docs list for a batch size error.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

# TEI's error kinds (its ErrorType enum, serialized by name) with the status each is answered with
UNAUTHORIZED, EMPTY, VALIDATION, OVERLOADED, BACKEND, UNHEALTHY = (
    "Unauthorized", "Empty", "Validation", "Overloaded", "Backend", "Unhealthy")
DIRECTIONS = {"right": "right", "Right": "right", "left": "left", "Left": "left"}  # TEI's serde aliases


class ApiError(Exception):
    """An answer other than 200: status, TEI's error kind and a message meant for the client."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message

    def body(self) -> dict[str, str]:
        return {"error": self.message, "error_type": self.error_type}


def too_large(size: int, limit: int) -> ApiError:
    return ApiError(413, VALIDATION, f"payload of {size} bytes exceeds the limit of {limit} bytes (--payload-limit)")


@dataclass(frozen=True)
class EmbedRequest:
    texts: list[str]
    truncate: bool
    direction: str  # "right" | "left"


def parse_request(body: Any, *, max_client_batch_size: int, auto_truncate: bool) -> EmbedRequest:
    """The request's texts and options, or an ApiError naming the field at fault."""
    if not isinstance(body, dict):
        raise ApiError(422, VALIDATION, f"the body must be a JSON object with `inputs`, not {_kind(body)}")
    if "inputs" not in body:
        raise ApiError(422, VALIDATION, "missing field `inputs`")
    inputs = body["inputs"]
    if isinstance(inputs, str):
        texts = [inputs]
    elif isinstance(inputs, list):
        if not inputs:
            raise ApiError(400, EMPTY, "Input validation error: `inputs` cannot be empty")
        if all(isinstance(x, int) and not isinstance(x, bool) for x in inputs) or any(
                isinstance(x, list) for x in inputs):
            raise ApiError(422, VALIDATION, "`inputs` as token ids is not supported: send text")
        for i, x in enumerate(inputs):
            if not isinstance(x, str):
                raise ApiError(422, VALIDATION, f"`inputs[{i}]` must be a string, not {_kind(x)}")
        if len(inputs) > max_client_batch_size:
            raise ApiError(413, VALIDATION, f"batch size {len(inputs)} > maximum allowed batch size "
                                            f"{max_client_batch_size}")
        texts = inputs
    else:
        raise ApiError(422, VALIDATION, f"`inputs` must be a string or a list of strings, not {_kind(inputs)}")
    for i, text in enumerate(texts):
        if not text:
            where = "`inputs`" if isinstance(inputs, str) else f"`inputs[{i}]`"
            raise ApiError(400, EMPTY, f"Input validation error: {where} cannot be empty")
    truncate = body.get("truncate")
    if truncate is None:
        truncate = auto_truncate
    elif not isinstance(truncate, bool):
        raise ApiError(422, VALIDATION, f"`truncate` must be true, false or null, not {_kind(truncate)}")
    direction = body.get("truncation_direction", "right")
    if direction is None:
        direction = "right"
    if direction not in DIRECTIONS:
        raise ApiError(422, VALIDATION, f"`truncation_direction` must be \"right\" or \"left\", not {direction!r:.40}")
    if body.get("prompt_name") is not None:
        raise ApiError(422, VALIDATION, "`prompt_name`: this server applies no prompts; send the text as it is "
                                        "to be encoded")
    return EmbedRequest(list(texts), truncate, DIRECTIONS[direction])


def too_long(tokens: int, max_length: int) -> ApiError:
    """TEI's answer to a text over the max length with truncation off (its message, word for word)."""
    return ApiError(422, VALIDATION, f"Input validation error: `inputs` must have less than {max_length} tokens. "
                                     f"Given: {tokens}")


def sparse_rows(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray) -> list[list[dict[str, Any]]]:
    """TEI's response: per row, {"index", "value"} for each stored (non-zero) weight, in index order
    (the CSR rows' own order: ascending)."""
    cols, vals = indices.tolist(), values.tolist()
    bounds = indptr.tolist()
    return [[{"index": c, "value": v} for c, v in zip(cols[lo:hi], vals[lo:hi])]
            for lo, hi in pairwise(bounds)]


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
             int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)
