"""The native SPLADE head: kernels/_head.c's packed arrays and its call, for the native variants.

The export's states graph stops at the MLM transform ([batch, seq, hidden]); the head's arrays
(decoder weight and bias, the screen's centre) come in one .npz beside it. The kernel is the
screened graph's certified int8 screen and exact fp32 pass (kernels.screening's bound), fused per
vocab tile (see _head.c for what that saves), so its vectors are the fp32 graph's.

The kernel needs AVX-512 VNNI and a C compiler at install (the extension is optional); where either
is missing, `unavailable()` says why and the CPU runs the screened graph instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ExportDirError

# the .npz's arrays: the exact pass's (weight, bias), the screen's (int8 rows, their scales, the centre)
# and the bound's per-vocab terms (kernels.screening.screen_bound), computed once at export
HEAD_ARRAYS = ("weight", "bias", "center", "wq", "scale", "coeff", "const")
_ACTIVATION_CODE = {"relu": 0, "log1p_relu": 1}  # the kernel's: log1p once, or twice


def _kernel():
    try:
        from . import _head
    except ImportError:
        return None
    return _head


def unavailable() -> str | None:
    """None when the kernel runs here, else why not (for the error a forced variant raises)."""
    kernel = _kernel()
    if kernel is None:
        return "splade-rt was installed without its C extension (no C compiler at install time)"
    if not kernel.supported():
        return "this CPU has no AVX-512 VNNI"
    return None


def head_arrays(weight: np.ndarray, bias: np.ndarray, center: np.ndarray | None) -> dict[str, np.ndarray]:
    """HEAD_ARRAYS for a decoder: what the exporter writes and the kernel reads."""
    from .screening import screen_bound

    bound = screen_bound(weight, bias, center)
    return {"weight": np.asarray(weight, np.float32), "bias": bias.astype(np.float32), "center": bound["center"],
            "wq": bound["rows"]["wq"], "scale": bound["rows"]["scale"], "coeff": bound["coeff"],
            "const": bound["const"]}


class NativeHead:
    """The kernel's arrays, packed once at load: int8 weights in vocab tiles of 32 rows x 4 bytes per
    lane (vpdpbusd's layout), the uint8 offset's correction, and the bound's terms per vocab entry."""

    def __init__(self, arrays: dict[str, np.ndarray], activation: str) -> None:
        why_not = unavailable()
        if why_not:
            raise RuntimeError(f"the native head can't run here: {why_not}")
        self.kernel = _kernel()
        vocab, hidden = arrays["weight"].shape
        tile, self.vocab, self.hidden = self.kernel.VOCAB_TILE, vocab, hidden
        self.k = -(-hidden // 4) * 4
        self.tiles = -(-vocab // tile)
        padded = self.tiles * tile
        wq = np.zeros((padded, self.k), np.int8)
        wq[:vocab, :hidden] = arrays["wq"]
        # [tiles, k / 4, 32, 4]: per 4 hidden dims, the tile's 32 rows' 4 bytes side by side
        self.packed = np.ascontiguousarray(wq.reshape(self.tiles, tile, self.k // 4, 4).transpose(0, 2, 1, 3))
        self.correction = 128 * wq.sum(axis=1, dtype=np.int32)

        def padded_row(x: np.ndarray, fill: float) -> np.ndarray:
            out = np.full(padded, fill, np.float32)
            out[:vocab] = x
            return out

        self.scale = padded_row(arrays["scale"], 0.0)
        self.coeff = [padded_row(row, 0.0) for row in arrays["coeff"]]
        self.const = padded_row(arrays["const"], -np.inf)  # padding rows are never candidates
        self.center, self.weight, self.bias = (np.ascontiguousarray(arrays[name], dtype=np.float32)
                                               for name in ("center", "weight", "bias"))
        self.activation = _ACTIVATION_CODE[activation]

    @classmethod
    def load(cls, path: Path, activation: str, vocab: int, hidden: int) -> NativeHead:
        """From the export's .npz, checked against the manifest's sizes: one clear error otherwise."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in HEAD_ARRAYS}
        except (OSError, ValueError, KeyError) as e:
            raise ExportDirError(f"{path}: not a readable head file ({str(e)[:160]})") from None
        shapes = {"weight": (vocab, hidden), "bias": (vocab,), "center": (hidden,), "wq": (vocab, hidden),
                  "scale": (vocab,), "coeff": (2, vocab), "const": (vocab,)}
        for name, shape in shapes.items():
            if arrays[name].shape != shape:
                raise ExportDirError(f"{path}: {name} is {arrays[name].shape}, expected {shape}")
        return cls(arrays, activation)

    def dense(self, rows: int, indptr: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> np.ndarray:
        """[rows, vocab] from __call__'s CSR."""
        out = np.zeros((rows, self.vocab), np.float32)
        out[np.repeat(np.arange(rows), np.diff(indptr)), cols] = vals
        return out

    def __call__(self, states: np.ndarray, mask: np.ndarray,
                 threads: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rows' non-zeros as CSR (indptr, columns ascending, values), written by the kernel: no
        [batch, vocab] array is made or scanned. threads split the vocab tiles."""
        states = np.ascontiguousarray(states, dtype=np.float32)
        mask = np.ascontiguousarray(mask, dtype=np.int64)
        rows, seq, hidden = states.shape
        if mask.shape != (rows, seq) or hidden != self.hidden:
            raise ValueError(f"native head: states {states.shape} and mask {mask.shape} don't match its hidden size "
                             f"{self.hidden}")
        counts, cols, vals, _ = self.kernel.run(
            states, mask, self.center, self.packed, self.correction, self.scale, self.coeff[0], self.coeff[1],
            self.const, self.weight, self.bias, rows, seq, hidden, self.k, self.vocab, self.activation, threads)
        indptr = np.zeros(rows + 1, np.int64)
        np.cumsum(np.frombuffer(counts, np.int32), out=indptr[1:])
        return indptr, np.frombuffer(cols, np.int32), np.frombuffer(vals, np.float32)
