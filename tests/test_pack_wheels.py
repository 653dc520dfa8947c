"""benchmarks/pack_wheels.py: Ray's wheel repacked without its Java jars is still a whole wheel."""

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from pack_wheels import check_record, closure, repack_without  # noqa: E402


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}\n"


def _fake_ray_wheel(folder: Path) -> Path:
    files = {"ray/__init__.py": b"VALUE = 1\n", "ray/jars/ray_dist.jar": b"\0" * 4096,
             "ray/jars/other.jar": b"java", "ray-9.9.9.dist-info/METADATA":
             b"Metadata-Version: 2.1\nName: ray\nVersion: 9.9.9\n",
             "ray-9.9.9.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(_record_line(path, data) for path, data in files.items()) + "ray-9.9.9.dist-info/RECORD,,\n"
    wheel = folder / "ray-9.9.9-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr("ray-9.9.9.dist-info/RECORD", record)
    return wheel


def test_repack_drops_the_jars_and_their_record_lines(tmp_path):
    wheel = _fake_ray_wheel(tmp_path)
    assert check_record(wheel) == []
    assert repack_without(wheel, "ray/jars/") > 0
    with zipfile.ZipFile(wheel) as archive:
        assert archive.testzip() is None
        assert not [n for n in archive.namelist() if n.startswith("ray/jars/")]
        assert "ray/jars/" not in archive.read("ray-9.9.9.dist-info/RECORD").decode()
        assert archive.read("ray/__init__.py") == b"VALUE = 1\n"
    assert check_record(wheel) == []  # every file listed with its hash, nothing listed that is gone
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                    "--no-compile", "--target", str(site), str(wheel)], check=True)
    assert (site / "ray" / "__init__.py").read_text() == "VALUE = 1\n"
    assert not (site / "ray" / "jars").exists()


def test_closure_leaves_out_what_the_target_has():
    names = closure(["pydantic"], present={"typing-extensions"})
    assert "pydantic" in names and "pydantic-core" in names and "typing-extensions" not in names
