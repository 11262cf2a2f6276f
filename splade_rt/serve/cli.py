"""`splade-serve EXPORT_DIR`: TEI's /embed_sparse over an export, on uvicorn (pip install 'splade-rt[serve]').

The export is loaded once at start and is the only model served; no request names a path. The
socket is bound before the server starts, so a busy port is one error line, and --port 0 takes a
free one (the line printed at start says which).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
import sys
from typing import Any

from ..cli_support import (
    EXTRAS,
    add_verbose,
    device_arg,
    device_help,
    non_negative_float,
    run,
    variant_choices,
    variant_help,
)
from ..validation import positive_int_arg

PROG = "splade-serve"
API_KEY_ENV = "SPLADE_SERVE_API_KEY"  # read when --api-key is not given: a key on the command line shows in `ps`

logger = logging.getLogger("splade_rt")


def _truth(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"must be true or false, not {text!r}")


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0..65535, not {text!r}")
    return int(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, usage="%(prog)s EXPORT_DIR [options]",
        description="Serve a splade-export directory over HTTP with text-embeddings-inference's /embed_sparse API "
                    "(documents; POST /query/embed_sparse for queries), /info, /health and Prometheus /metrics. "
                    "Concurrent requests share graph runs through a micro-batcher. Docs: docs/serve.md.")
    p.add_argument("export_dir", metavar="EXPORT_DIR", help="a directory written by splade-export")
    net = p.add_argument_group("network")
    net.add_argument("--hostname", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for every interface)")
    net.add_argument("--port", type=_port, default=3000, help="port (default 3000; 0: any free one)")
    net.add_argument("--api-key", default=None,
                     help=f"require `Authorization: Bearer KEY` on every route but /health and /metrics (default: "
                          f"${API_KEY_ENV} if set, else no key)")
    lim = p.add_argument_group("limits (TEI's names and defaults)")
    lim.add_argument("--max-client-batch-size", type=positive_int_arg, default=32,
                     help="inputs per request; more is 413 (default 32)")
    lim.add_argument("--payload-limit", type=positive_int_arg, default=2_000_000,
                     help="request body bytes; more is 413 (default 2000000)")
    lim.add_argument("--max-concurrent-requests", type=positive_int_arg, default=None, metavar="TEXTS",
                     help="texts queued or encoding at once; past it a request is 429 (default: the device's, "
                          "1024 on the CPU)")
    lim.add_argument("--auto-truncate", type=_truth, default=True, metavar="{true,false}",
                     help="what a request without `truncate` gets: true cuts texts at the max length, false "
                          "answers 422 for a longer text (default true)")
    bat = p.add_argument_group("micro-batching")
    bat.add_argument("--max-batch-tokens", type=positive_int_arg, default=None,
                     help="tokens gathered into one encode (default: the device's)")
    bat.add_argument("--max-wait-ms", type=non_negative_float, default=None,
                     help="longest a text waits for others to share its graph run (default: the device's)")
    enc = p.add_argument_group("encoder")
    enc.add_argument("--device", default="auto", type=device_arg, help=device_help())
    enc.add_argument("--variant", default=None, choices=variant_choices(), metavar="VARIANT", help=variant_help())
    enc.add_argument("--threads", type=positive_int_arg, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--access-log", action="store_true", help="log every request (uvicorn's access log)")
    add_verbose(p)
    return p


def _require_serve_extra() -> None:
    """One line naming the extra when the server's packages are missing (before the encoder loads)."""
    import importlib.util

    missing = [name for name, extra in EXTRAS.items() if extra == "serve" and importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"{missing[0]} is not installed; pip install 'splade-rt[serve]'")


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket, or OSError naming the address (a busy port is the user's to fix)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise ValueError(f"--hostname {host!r}: {e.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.set_inheritable(True)
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(args: argparse.Namespace) -> int:
    _require_serve_extra()
    import uvicorn

    from ..runtime.cli import load_encoder
    from .app import ServeSettings, create_app

    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    settings = ServeSettings(max_client_batch_size=args.max_client_batch_size, payload_limit=args.payload_limit,
                             auto_truncate=args.auto_truncate, api_key=api_key)
    sock = bind(args.hostname, args.port)  # before the encoder loads: a busy port fails fast
    encoder = load_encoder(PROG, args.export_dir, device=args.device, variant=args.variant, threads=args.threads,
                           verbose=args.verbose)
    options: dict[str, Any] = {"max_batch_tokens": args.max_batch_tokens, "max_wait_ms": args.max_wait_ms,
                               "max_queue": args.max_concurrent_requests}
    app = create_app(encoder, settings, **{k: v for k, v in options.items() if v is not None})
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if not _is_loopback(args.hostname) and not api_key:
        logger.warning("%s: listening on %s without --api-key: anyone who can reach this port can use it",
                       PROG, args.hostname)
    batcher = app.state.batcher
    print(f"{PROG}: serving {args.export_dir} on http://{shown}:{port} ({encoder.device}, "
          f"{encoder.placement.precision}; max_batch_tokens {batcher.max_batch_tokens}, max_wait_ms "
          f"{batcher.max_wait_ms:g}, queue {batcher.max_queue}); POST /embed_sparse (documents), "
          "/query/embed_sparse (queries)", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_config=None, log_level="info" if args.verbose else "warning",
                            access_log=args.access_log, server_header=False,
                            loop="uvloop" if _has("uvloop") else "asyncio",
                            http="httptools" if _has("httptools") else "h11")
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def main(argv: list[str] | None = None) -> int:
    return run(parser(), serve, argv)


if __name__ == "__main__":
    sys.exit(main())
