"""The report CLI: bad input gives one 'error:' line and exit 2; a tiny run writes every output."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
    return subprocess.run([sys.executable, "-m", "parity_tests.report", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_unknown_variant_is_one_line_error():
    r = run("--variants", "coat_huge", "--out", "/tmp/unused_parity_out")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: unknown variant(s) coat_huge")
    assert "Traceback" not in r.stderr


def test_out_is_a_file_is_one_line_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r = run("--variants", "coat_lite_tiny", "--out", str(f))
    assert r.returncode == 2 and "is not a folder" in r.stderr and "Traceback" not in r.stderr
