"""The micro-batcher (in process) and splade-serve (a real server process, a real HTTP client)."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from splade_rt import SpladeEncoder
from splade_rt.errors import OverloadedError
from splade_rt.serve import MicroBatcher
from splade_rt.serve.truncation import TokenCounter

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

REPO = Path(__file__).resolve().parents[1]
KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def encoder(export_dir) -> SpladeEncoder:
    return SpladeEncoder(export_dir, device="cpu")


@pytest.fixture(scope="module")
def texts(real_pairs) -> list[str]:
    queries, passages = real_pairs
    return queries[:40] + passages[:8]


def same_vectors(got, expected, tolerance: float = 1e-6) -> None:
    """Same rows, same non-zero terms, values within tolerance."""
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g.indices, e.indices)
        np.testing.assert_allclose(g.values, e.values, rtol=0, atol=tolerance)


class Spy:
    """The encoder, recording how many texts each encode call got (what the batcher shares runs through)."""

    def __init__(self, encoder: SpladeEncoder, fail_on: str | None = None) -> None:
        self._encoder, self.calls, self.fail_on = encoder, [], fail_on
        self.threads: list[threading.Thread] = []

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    def _record(self, texts):
        texts = [texts] if isinstance(texts, str) else list(texts)
        self.calls.append(len(texts))
        self.threads.append(threading.current_thread())
        if self.fail_on is not None and self.fail_on in texts:
            raise ValueError(f"cannot encode {self.fail_on!r}")
        return texts

    def encode_query(self, texts, **kwargs):
        return self._encoder.encode_query(self._record(texts), **kwargs)

    def encode_document(self, texts, **kwargs):
        return self._encoder.encode_document(self._record(texts), **kwargs)


def in_threads(work, count: int) -> list:
    results, errors = [None] * count, [None] * count

    def run(i: int) -> None:
        try:
            results[i] = work(i)
        except Exception as e:  # noqa: BLE001 - returned to the test, which asserts on it
            errors[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return list(zip(results, errors))


# -- the micro-batcher ------------------------------------------------------------------------------


def test_batcher_results_equal_single_text_encodes_and_share_runs(encoder, texts):
    spy = Spy(encoder)
    with MicroBatcher(spy, max_wait_ms=200, runs=1) as mb:
        out = in_threads(lambda i: mb.encode_query(texts[i]), len(texts))
    assert all(error is None for _, error in out)
    same_vectors([r[0] for r, _ in out], [encoder.encode_query(t)[0] for t in texts])
    assert sum(spy.calls) == len(texts)
    # gathered: far fewer encode calls than callers, and calls that carried many callers' texts
    assert len(spy.calls) < len(texts) // 4 and max(spy.calls) >= 8, spy.calls
    assert all(t.name.startswith("splade-microbatch") for t in spy.threads)


def test_batcher_lists_keep_their_order_and_options(encoder, texts):
    with MicroBatcher(encoder, max_wait_ms=20) as mb:
        out = in_threads(lambda i: mb.encode_document(texts[i::4], top_k=5), 4)
    for i, (result, error) in enumerate(out):
        assert error is None
        expected = encoder.encode_document(texts[i::4], top_k=5)
        same_vectors(result, expected)
        assert all(len(row) <= 5 for row in result)


def test_one_callers_texts_stay_in_one_encode_exactly_as_the_encoders(encoder, texts):
    spy = Spy(encoder)
    passages = texts[40:48]
    with MicroBatcher(spy, max_batch_tokens=64, max_wait_ms=0) as mb:  # a budget far below these texts
        result = mb.encode_document(passages)
    assert spy.calls == [len(passages)]  # not split across gatherings
    expected = encoder.encode_document(passages)
    np.testing.assert_array_equal(result.indptr, expected.indptr)
    np.testing.assert_array_equal(result.indices, expected.indices)
    np.testing.assert_array_equal(result.values, expected.values)  # the same batches: the same bits


def test_batcher_asyncio_api(encoder, texts):
    spy = Spy(encoder)

    async def main(mb):
        return await asyncio.gather(*(mb.aencode_query(t) for t in texts[:24]),
                                    mb.aencode_document(texts[40:44]))

    with MicroBatcher(spy, max_wait_ms=100) as mb:
        results = asyncio.run(main(mb))
    same_vectors([r[0] for r in results[:24]], [encoder.encode_query(t)[0] for t in texts[:24]])
    same_vectors(results[24], encoder.encode_document(texts[40:44]))
    assert len(spy.calls) < 24


def test_a_failing_text_fails_only_its_own_call(encoder, texts):
    spy = Spy(encoder, fail_on="BOOM")
    batch = texts[:7] + ["BOOM"]
    with MicroBatcher(spy, max_wait_ms=300, runs=1) as mb:
        out = in_threads(lambda i: mb.encode_query(batch[i]), len(batch))
    assert max(spy.calls) > 1  # the bad text was in a shared run, which failed and was retried text by text
    for text, (result, error) in zip(batch, out):
        if text == "BOOM":
            assert isinstance(error, ValueError) and "BOOM" in str(error)
        else:
            assert error is None
            same_vectors(result, encoder.encode_query(text))


def test_bad_input_raises_at_submit_without_queueing(encoder):
    spy = Spy(encoder)
    with MicroBatcher(spy) as mb:
        with pytest.raises(TypeError, match="texts must be a str"):
            mb.encode_query(123)
        with pytest.raises(ValueError, match=r"texts\[1\] is not valid Unicode"):
            mb.encode_document(["fine", "bad \ud800"])
        with pytest.raises(ValueError, match="top_k"):
            mb.encode_query("x", top_k=0)
        with pytest.raises(TypeError, match="unexpected keyword"):
            mb.encode_query("x", topk=3)
    assert spy.calls == []


def test_full_queue_raises_overloaded_at_once_and_close_finishes_queued_work(encoder, texts):
    mb = MicroBatcher(encoder, max_queue=3, max_wait_ms=60_000, runs=1)
    futures = [mb.submit(t, "query") for t in texts[:3]]
    started = time.perf_counter()
    with pytest.raises(OverloadedError, match="max_queue=3"):
        mb.encode_query(texts[3])
    assert time.perf_counter() - started < 1.0  # refused at once, not after a wait
    assert mb.queued == 3 and not any(f.done() for f in futures)
    mb.close()  # does not wait out the 60 s: queued texts are sent at once, and answered
    assert time.perf_counter() - started < 30
    same_vectors([f.result(0)[0] for f in futures], [encoder.encode_query(t)[0] for t in texts[:3]])
    assert mb.queued == 0 and not mb.healthy
    with pytest.raises(RuntimeError, match="closed"):
        mb.encode_query("x")


def test_truncated_counts_each_callers_own_texts(encoder, texts):
    long_text = "word " * 900
    with MicroBatcher(encoder, max_wait_ms=200, runs=1) as mb:
        out = in_threads(lambda i: mb.encode_document([long_text, texts[0]] if i == 0 else texts[i]), 6)
    assert out[0][0].truncated == 1
    assert all(result.truncated == 0 for result, _ in out[1:])


def test_inference_free_queries_are_answered_on_the_callers_thread(encoder):
    class TableModel(Spy):
        query_table = object()  # what SpladeEncoder has for an inference-free export

    spy = TableModel(encoder)
    with MicroBatcher(spy) as mb:
        result = mb.encode_query("what is splade")
        mb.encode_document("a passage")
    assert spy.threads[0] is threading.current_thread()  # looked up at once, not queued for a dispatcher
    assert spy.threads[1].name.startswith("splade-microbatch")
    same_vectors(result, encoder.encode_query("what is splade"))


def test_left_truncation_keeps_the_end_from_a_word_start(export_dir):
    from tokenizers import Tokenizer

    small = SpladeEncoder(export_dir, device="cpu", max_length=16)
    counter = TokenCounter(small)
    oracle = Tokenizer.from_file(str(export_dir / "tokenizer.json"))
    # "tokenization" is two pieces (token ##ization): 21 tokens, of which 14 fit beside [CLS] and [SEP];
    # the last 14 start inside a word, so that word goes too and 13 remain
    text = "tokenization " * 10 + "end"
    assert counter.count([text]) == [23]
    cut, tokens = counter.cut_left(text)
    assert cut == "tokenization " * 6 + "end" and tokens == 15 == len(small.tokenize(cut)[0])
    whole = oracle.encode(text, add_special_tokens=False).ids
    kept = oracle.encode(cut, add_special_tokens=False).ids
    assert kept == whole[-len(kept):]  # exactly the text's last tokens
    assert counter.cut_left("short text") == ("short text", len(small.tokenize("short text")[0]))
    with pytest.raises(ValueError, match="left"):  # one word longer than max_length: no word start to cut at
        counter.cut_left("xq" * 20)  # 40 pieces of one word


# -- splade-serve: a real server process, a real HTTP client ------------------------------------------


class ServerProcess:
    def __init__(self, export_dir: Path, *flags: str) -> None:
        command = [sys.executable, "-m", "splade_rt.serve.cli", str(export_dir), "--port", "0", "--device", "cpu",
                   *flags]
        self.process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
        line = self.process.stderr.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not found:
            self.process.kill()
            pytest.fail(f"splade-serve did not start: {line}{self.process.stderr.read()}")
        self.log: list[str] = [line]
        self._drain = threading.Thread(target=lambda: self.log.extend(self.process.stderr), daemon=True)
        self._drain.start()
        self.url = f"http://127.0.0.1:{found.group(1)}"
        self.client = httpx.Client(base_url=self.url, timeout=60)
        deadline = time.time() + 120
        while True:
            try:
                if self.client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > deadline or self.process.poll() is not None:
                pytest.fail(f"splade-serve never answered /health: {''.join(self.log)}")
            time.sleep(0.1)

    def post(self, route: str, body=None, *, content: bytes | None = None, headers=AUTH):
        if content is not None:
            return self.client.post(route, content=content, headers=headers)
        return self.client.post(route, json=body, headers=headers)

    def stop(self) -> bool:
        """SIGTERM, as a service manager stops it; True when it shut down cleanly (uvicorn answers what is
        in flight, then ends by the signal it caught, or with 0)."""
        self.client.close()
        self.process.terminate()
        code = self.process.wait(60)
        self._drain.join(10)
        return code in (0, -signal.SIGTERM) and "Traceback" not in "".join(self.log)


@pytest.fixture(scope="module")
def server(export_dir):
    proc = ServerProcess(export_dir, "--api-key", KEY, "--payload-limit", "200000")
    yield proc
    assert proc.stop(), "".join(proc.log)


def rows_of(response) -> list[tuple[np.ndarray, np.ndarray]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    out = []
    for row in response.json():
        indices = np.array([e["index"] for e in row], dtype=np.int64)
        values = np.array([e["value"] for e in row], dtype=np.float32)
        assert np.all(np.diff(indices) > 0) and np.all(values != 0)  # TEI's order: ascending index, non-zeros
        out.append((indices, values))
    return out


def assert_exact(rows, expected) -> None:
    assert len(rows) == len(expected)
    for (indices, values), e in zip(rows, expected):
        np.testing.assert_array_equal(indices, e.indices)
        np.testing.assert_array_equal(values, e.values)


def assert_tei_error(response, status: int, error_type: str, match: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == error_type, body
    assert re.search(match, body["error"]), body
    assert "Traceback" not in response.text


def still_serving(server) -> None:
    assert len(rows_of(server.post("/embed_sparse", {"inputs": "still serving"}))) == 1


def test_embed_sparse_equals_encode_document(server, encoder, texts):
    text = texts[41]
    assert_exact(rows_of(server.post("/embed_sparse", {"inputs": text})), encoder.encode_document(text))
    batch = texts[:8] + texts[40:44]
    assert_exact(rows_of(server.post("/embed_sparse", {"inputs": batch})), encoder.encode_document(batch))
    # truncate true (the default) cuts on the right, as the encoder does
    long_text = " ".join(texts[40:48])
    assert_exact(rows_of(server.post("/embed_sparse", {"inputs": [long_text], "truncate": True})),
                 encoder.encode_document([long_text]))


def test_query_route_equals_encode_query(server, encoder, texts):
    assert_exact(rows_of(server.post("/query/embed_sparse", {"inputs": texts[:5]})), encoder.encode_query(texts[:5]))


def test_left_truncation_keeps_the_texts_end(server, encoder):
    text = "cats " * 300 + "dogs " * 600  # one token per word: the last 510 tokens are all "dogs"
    expected = encoder.encode_document("dogs " * (encoder.max_length - 2))
    left = rows_of(server.post("/embed_sparse", {"inputs": text, "truncation_direction": "left"}))
    assert_exact(left, expected)
    right = rows_of(server.post("/embed_sparse", {"inputs": text, "truncation_direction": "right"}))
    assert_exact(right, encoder.encode_document(text))
    assert not np.array_equal(left[0][0], right[0][0])


def test_api_key(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        response = server.post("/embed_sparse", {"inputs": "x"}, headers=headers)
        assert_tei_error(response, 401, "Unauthorized", "API key")
        assert response.headers["www-authenticate"] == "Bearer"
        assert server.client.get("/info", headers=headers).status_code == 401
    assert server.client.get("/health").status_code == 200  # public, as in TEI
    assert server.client.get("/metrics").status_code == 200
    still_serving(server)


@pytest.mark.parametrize("content, match", [
    (b'{"inputs": ', "not valid JSON"),
    (b'["a", "b"]', "JSON object"),
    (b'{"text": "a"}', "missing field `inputs`"),
    (b'{"inputs": 3}', "string or a list"),
    (b'{"inputs": ["a", 3]}', r"inputs\[1\]"),
    (b'{"inputs": [101, 2054]}', "token ids"),
    (b'{"inputs": "a", "truncate": "yes"}', "truncate"),
    (b'{"inputs": "a", "truncation_direction": "up"}', "truncation_direction"),
    (b'{"inputs": "a", "prompt_name": "query"}', "prompt"),
    (b'{"inputs": "bad \\ud800 text"}', ""),
])
def test_malformed_bodies_are_422(server, content, match):
    headers = {**AUTH, "Content-Type": "application/json"}
    assert_tei_error(server.post("/embed_sparse", content=content, headers=headers), 422, "Validation", match)
    still_serving(server)


def test_empty_input_is_tei_400(server):
    assert_tei_error(server.post("/embed_sparse", {"inputs": []}), 400, "Empty", "cannot be empty")
    assert_tei_error(server.post("/embed_sparse", {"inputs": ["a", ""]}), 400, "Empty", r"inputs\[1\]")
    still_serving(server)


def test_too_long_with_truncate_false_is_422(server, encoder):
    long_text = "word " * 600
    assert_tei_error(server.post("/embed_sparse", {"inputs": ["short", long_text], "truncate": False}),
                     422, "Validation", rf"must have less than {encoder.max_length} tokens. Given: 602")
    fits = "word " * 100
    assert_exact(rows_of(server.post("/embed_sparse", {"inputs": fits, "truncate": False})),
                 encoder.encode_document(fits))
    still_serving(server)


def test_size_limits_are_413(server):
    assert_tei_error(server.post("/embed_sparse", {"inputs": ["x"] * 33}), 413, "Validation",
                     "batch size 33 > maximum allowed batch size 32")
    big = b'{"inputs": "' + b"a" * 300_000 + b'"}'
    assert_tei_error(server.post("/embed_sparse", content=big), 413, "Validation", "exceeds the limit of 200000")

    def chunks():  # no Content-Length: refused while reading
        for _ in range(30):
            yield b" " * 10_000

    assert_tei_error(server.post("/embed_sparse", content=chunks()), 413, "Validation", "exceeds the limit")
    still_serving(server)


def test_info_and_metrics(server, encoder):
    info = server.client.get("/info", headers=AUTH).json()
    assert info["max_input_length"] == encoder.max_length and info["device"] == "cpu"
    assert info["max_client_batch_size"] == 32 and info["payload_limit"] == 200_000
    assert info["model_dtype"] == encoder.placement.precision and info["query_encoder"] == "graph"
    still_serving(server)
    metrics = server.client.get("/metrics").text
    for name in ("splade_serve_requests_total", "splade_serve_batch_size_bucket", "splade_serve_queue_duration_seconds",
                 "splade_serve_inference_duration_seconds", "splade_serve_request_duration_seconds",
                 "splade_serve_queue_texts"):
        assert name in metrics
    served = re.search(r'splade_serve_requests_total\{route="/embed_sparse",status="200"\} (\d+)', metrics)
    assert served and int(served.group(1)) >= 1
    assert re.search(r"splade_serve_batch_size_count (\d+)", metrics).group(1) != "0"


def test_a_full_queue_is_429_at_once_and_the_server_recovers(export_dir):
    wait_ms = 4000  # a queued text waits this long for company: the queue stays full meanwhile
    proc = ServerProcess(export_dir, "--max-concurrent-requests", "32", "--max-wait-ms", str(wait_ms))
    try:
        first: dict = {}
        filler = threading.Thread(target=lambda: first.update(r=proc.post("/embed_sparse", {"inputs": ["x"] * 32})))
        filler.start()
        deadline = time.time() + 30
        while "splade_serve_queue_texts 32.0" not in proc.client.get("/metrics").text:
            assert time.time() < deadline, "the first request never filled the queue"
            time.sleep(0.02)
        started = time.perf_counter()
        response = proc.post("/embed_sparse", {"inputs": "one more"})
        assert time.perf_counter() - started < wait_ms / 1000  # refused at once, not queued behind the others
        assert_tei_error(response, 429, "Overloaded", "Model is overloaded")
        filler.join(60)
        assert len(rows_of(first["r"])) == 32
        still_serving(proc)
        # stopped while a request waits in the queue: that request is still answered
        last: dict = {}
        waiting = threading.Thread(target=lambda: last.update(r=httpx.post(proc.url + "/embed_sparse", timeout=60,
                                                                         json={"inputs": "last"})))
        waiting.start()
        while "splade_serve_queue_texts 1.0" not in proc.client.get("/metrics").text:
            assert time.time() < deadline + 60, "the last request never reached the queue"
            time.sleep(0.02)
    finally:
        assert proc.stop(), "".join(proc.log)
    waiting.join(60)
    assert len(rows_of(last["r"])) == 1


def test_inference_free_query_route(tmp_path_factory):
    from random_models import make_model

    from splade_rt.export.pipeline import export_model

    root = tmp_path_factory.mktemp("router-serve")
    src = make_model("distilbert", root / "model", layout="router", activation="log1p_relu")
    export_model(str(src), root / "onnx", fp16=False, screened=False, log=lambda _: None)  # queries need no graph
    enc = SpladeEncoder(root / "onnx", device="cpu")
    proc = ServerProcess(root / "onnx")
    try:
        queries = ["the capital city", "what is a gene"]
        assert proc.client.get("/info").json()["query_encoder"] == "table"
        assert_exact(rows_of(proc.post("/query/embed_sparse", {"inputs": queries})), enc.encode_query(queries))
        assert_exact(rows_of(proc.post("/embed_sparse", {"inputs": queries})), enc.encode_document(queries))
    finally:
        assert proc.stop(), "".join(proc.log)
