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
    assert verbose.stderr.startswith("splade-encode: running on CPU: the installed onnxruntime has no")
    assert verbose.stderr.count("\n") == 1 and "Warning" not in verbose.stderr and ".py" not in verbose.stderr


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
