"""What a new user tripped on (issue 14's rough edges), each pinned by a test of the new behaviour."""

from __future__ import annotations

import logging
import subprocess
import sys

import onnxruntime as ort
import pytest

from splade_rt import DeviceError, ExportDirError, SpladeEncoder

LONG = "send in the clowns " * 400  # far past 512 tokens


def test_a_lone_surrogate_is_a_clear_error_naming_the_text(export_dir):
    enc = SpladeEncoder(export_dir, device="cpu")
    with pytest.raises(ValueError, match=r"texts\[1\] is not valid Unicode: '\\ud800' at character 4"):
        enc.encode(["fine text", "bad \ud800 text"])
    assert len(enc.encode(["bad \ufffd text"])) == 1  # the repaired text encodes


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "splade_rt.runtime.cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="needs a CPU-only onnxruntime")
def test_auto_device_on_a_cpu_only_machine_prints_no_python_warning(export_dir):
    quiet = run_cli(str(export_dir), "what is splade")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    verbose = run_cli(str(export_dir), "what is splade", "--verbose")
    assert verbose.returncode == 0
    lines = verbose.stderr.splitlines()  # the reason, then the runtime's INFO lines: which graph runs
    assert lines[0].startswith("splade-encode: running on CPU: the installed onnxruntime has no")
    assert all(line.startswith("splade-encode: ") for line in lines) and any("CPUExecutionProvider" in line
                                                                             for line in lines[1:])
    assert "Warning" not in verbose.stderr and ".py" not in verbose.stderr


def test_texts_come_from_stdin_and_only_the_export_is_required(export_dir):
    piped = run_cli(str(export_dir), "--device", "cpu", stdin="first text\nsecond text\n")
    assert piped.returncode == 0 and "2 texts" in piped.stdout
    missing = run_cli()
    assert missing.returncode == 2
    assert "EXPORT_DIR is required" in missing.stderr and "stdin" in missing.stderr
    assert "texts" not in missing.stderr.split("error:")[1].split("(")[0]


def test_truncation_warns_once_per_encoder_then_logs_at_info(export_dir, caplog):
    enc = SpladeEncoder(export_dir, device="cpu")
    with caplog.at_level(logging.INFO, logger="splade_rt"):
        first = enc.encode([LONG, "short"])
        second = enc.encode([LONG])
    records = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert [r.levelno for r in records] == [logging.WARNING, logging.INFO]
    assert first.truncated == 1 and second.truncated == 1


def test_a_model_folder_suggests_exporting_it_elsewhere(default_model_dir):
    with pytest.raises(ExportDirError) as info:
        SpladeEncoder(default_model_dir, device="cpu")
    message = str(info.value)
    assert "looks like a model, not an export" in message
    assert f"splade-export {default_model_dir} -o {default_model_dir.name}-onnx/" in message


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="needs a CPU-only onnxruntime")
def test_device_errors_name_the_device_asked_for(export_dir):
    with pytest.raises(DeviceError, match=r"device='cuda:1' but the installed onnxruntime has no CUDA"):
        SpladeEncoder(export_dir, device="cuda:1")


def test_an_output_below_a_file_says_so(capsys):
    from splade_rt.export.cli import main as export_main

    assert export_main(["-o", "/dev/null/x"]) == 2
    err = capsys.readouterr().err
    assert "/dev/null is a file, not a directory" in err and "File exists" not in err


# -- every command: one convention (cli_support) -------------------------------------------------

COMMANDS = {  # console script -> module, as pyproject.toml's [project.scripts] names them
    "splade-export": "splade_rt.export.cli",
    "splade-encode": "splade_rt.runtime.cli",
    "splade-eval": "splade_rt.evaluation.cli",
    "splade-bench": "splade_rt.bench.cli",
    "splade-encode-corpus": "splade_rt.bulk.cli",
    "splade-serve": "splade_rt.serve.cli",
}
FINITE = tuple(name for name in COMMANDS if name != "splade-serve")  # the commands that end by themselves
DEVICE_COMMANDS = ("splade-encode", "splade-eval", "splade-bench", "splade-encode-corpus", "splade-serve")


def entry_point(name: str) -> list[str]:
    """The installed console script where there is one (what a user runs), else its module."""
    from pathlib import Path

    script = Path(sys.executable).parent / name
    return [str(script)] if script.is_file() else [sys.executable, "-m", COMMANDS[name]]


def test_every_entry_point_is_installed_as_the_table_says():
    """So that the tests below run every command there is."""
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {name: f"{module}:main" for name, module in COMMANDS.items()}


def tiny_beir(root):
    """A two-document BEIR dataset: enough for splade-eval and splade-encode-corpus to run in a second."""
    import json

    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n"
                                               for i, text in enumerate(("send in the clowns", "boil an egg"))))
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "clowns"}) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td0\t1\n")
    return root


def closed_reader_argv(name, export_dir, tmp_path):
    """A short real run of each command that writes to stdout."""
    if name == "splade-export":
        from conftest import make_tiny_model

        return [str(make_tiny_model(tmp_path / "tiny")), "-o", str(tmp_path / "tiny-onnx"), "--no-fp16"]
    data = str(tiny_beir(tmp_path / "beir"))
    return {"splade-encode": [str(export_dir), "--device", "cpu", "a text"],
            "splade-eval": [str(export_dir), data, "--device", "cpu"],
            "splade-bench": [str(export_dir), "--limit", "4", "--batch-size", "4", "--min-seconds", "0",
                             "--threads", "1"],
            "splade-encode-corpus": [str(export_dir), data, "-o", str(tmp_path / "vectors"), "--device", "cpu",
                                     "--no-progress"]}[name]


@pytest.mark.parametrize("name", FINITE)
def test_a_reader_that_closes_early_ends_every_command_quietly(name, export_dir, tmp_path):
    """`splade-... | head -0`: the reader is gone before the command writes; no traceback, exit 141."""
    proc = subprocess.Popen([*entry_point(name), *closed_reader_argv(name, export_dir, tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    _, err = proc.communicate(timeout=300)
    err = err.decode()
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err
    assert "error" not in err and proc.returncode == 141, err


def test_a_reader_that_closes_mid_output_ends_an_encode_quietly(export_dir):
    """`cat texts | splade-encode out/ | head -1`: the reader leaves after one line of thousands."""
    texts = "".join(f"text number {i}\n" for i in range(3000))
    proc = subprocess.Popen([*entry_point("splade-encode"), str(export_dir), "--device", "cpu"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write(texts.encode())
    proc.stdin.close()
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=300)
    assert first.startswith(b"# CPUExecutionProvider") and "3000 texts" in first.decode()
    assert "Traceback" not in err and "BrokenPipe" not in err and err == "", err
    assert proc.returncode == 141


@pytest.mark.parametrize("name", DEVICE_COMMANDS)
def test_device_help_lists_the_provider_tables_kinds(name):
    import re

    from splade_rt.runtime.providers import PROVIDERS

    out = subprocess.run([*entry_point(name), "--help"], capture_output=True, text=True, timeout=120).stdout
    device = " ".join(re.search(r"^ +--device DEVICE(.*?)(?=^ +-|^\S|\Z)", out, re.M | re.S).group(1).split())
    for kind in PROVIDERS:
        assert kind in device, (kind, device)
    assert "(default: cpu)" in device if name == "splade-bench" else "(default: auto)" in device


@pytest.mark.parametrize("name", DEVICE_COMMANDS)
def test_a_device_typo_is_one_usage_line_and_exit_2_on_every_command(name, tmp_path):
    argv = {"splade-encode": [str(tmp_path), "text"], "splade-eval": [str(tmp_path), str(tmp_path)],
            "splade-bench": [str(tmp_path)], "splade-serve": [str(tmp_path)],
            "splade-encode-corpus": [str(tmp_path), str(tmp_path), "-o", str(tmp_path / "v")]}[name]
    proc = subprocess.run([*entry_point(name), *argv, "--device", "gpu"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{name}: error: argument --device: 'gpu' is not a device; expected 'auto', 'cpu'")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name,argv", [
    ("splade-encode", ["{export}", "--top", "0", "text"]),
    ("splade-encode", ["{export}", "--top", "-2", "text"]),
    ("splade-bench", ["{export}", "--min-seconds", "-1"]),
    ("splade-bench", ["{export}", "--variant", "int9"]),
    ("splade-bench", ["{export}", "--json", "{tmp}/no/such/dir/report.json"]),
    ("splade-eval", ["{export}", "{tmp}", "--json", "{tmp}/no/such/dir/report.json"]),
    ("splade-eval", ["{export}", "{tmp}", "--max-length", "0"]),
])
def test_a_bad_option_value_is_a_usage_error_before_any_work(name, argv, export_dir, tmp_path):
    argv = [a.format(export=export_dir, tmp=tmp_path) for a in argv]
    proc = subprocess.run([*entry_point(name), *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines()[-1].startswith(f"{name}: error: argument ")


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="needs a CPU-only onnxruntime")
def test_splade_bench_says_error_and_exits_2_like_every_command(export_dir):
    proc = subprocess.run([*entry_point("splade-bench"), str(export_dir), "--device", "cuda"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("splade-bench: error: device='cuda' but the installed onnxruntime has no CUDA")
    assert "failed" not in proc.stderr + proc.stdout


def test_splade_bench_without_texts_times_the_readmes_collections_from_splade_shared(tmp_path, monkeypatch):
    import json

    from splade_rt.bench.cli import load_texts

    monkeypatch.delenv("SPLADE_SHARED", raising=False)
    passages, queries, what = load_texts(None, None, 20)
    assert len(passages) == 20 and "not comparable with the README's figures" in what and "SPLADE_SHARED" in what
    for name in ("scifact", "vaswani"):
        folder = tmp_path / "data" / name
        folder.mkdir(parents=True)
        docs = [{"_id": f"{name}{i}", "title": "", "text": f"{name} {i}"} for i in range(30)]
        queries = [{"_id": f"q{i}", "text": f"{name} query {i}"} for i in range(150)]
        (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
        (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    monkeypatch.setenv("SPLADE_SHARED", str(tmp_path))
    passages, queries, what = load_texts(None, None, 21)
    assert passages == [f"scifact {i}" for i in range(11)] + [f"vaswani {i}" for i in range(10)]
    assert len(queries) == 200 and queries[100] == "vaswani query 0"
    assert what == f"scifact and vaswani from SPLADE_SHARED={tmp_path}, as the README's figures"


def test_a_bug_is_one_line_and_exit_1_and_verbose_shows_where(capsys):
    import argparse

    from splade_rt.cli_support import add_verbose, run
    from splade_rt.errors import CorpusError

    parser = argparse.ArgumentParser(prog="splade-demo")
    add_verbose(parser)

    def fails(error):
        def command(args):
            raise error
        return command

    assert run(parser, fails(ZeroDivisionError("division by zero")), []) == 1
    err = capsys.readouterr().err
    assert err == "splade-demo: error: ZeroDivisionError: division by zero (unexpected: re-run with --verbose for " \
                  "the traceback)\n"
    assert run(parser, fails(CorpusError("corpus.jsonl:4: duplicate id 'd1'")), ["--verbose"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.endswith("splade-demo: error: corpus.jsonl:4: duplicate id 'd1'\n")
    assert run(parser, fails(ModuleNotFoundError("No module named 'pyarrow'", name="pyarrow")), []) == 2
    assert capsys.readouterr().err == "splade-demo: error: pyarrow is not installed; pip install " \
                                      "'splade-rt[distributed]'\n"
    assert run(parser, fails(KeyboardInterrupt()), [], interrupted="rerun to resume") == 130
    assert capsys.readouterr().err == "splade-demo: interrupted; rerun to resume\n"


def test_the_runtimes_log_lines_are_said_by_the_command(export_dir):
    """A truncation notice from splade-encode: one line, named by the command, in the user's words."""
    proc = subprocess.run([*entry_point("splade-encode"), str(export_dir), "--device", "cpu", LONG, "short"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "2 texts" in proc.stdout
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("splade-encode: 1 of 2 texts truncated to 512 tokens")
    assert "result.truncated" not in proc.stderr and "splade-rt:" not in proc.stderr
