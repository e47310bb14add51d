"""Header fuzzing of `uda predict`: random mutations of valid NIfTI / MHA / NRRD headers.

    python header_fuzz.py WORK MODEL START COUNT SEED   (the worker; see run_fuzz)

Case k (of a seeded sequence) takes one of three valid small volumes and mutates its header:
NIfTI-1 (.nii): 1-4 of its 348 header bytes set at random, or one field (dims, datatype,
bitpix, pixdim, vox_offset, scl_slope/inter, qform/sform codes and parameters) set to an
extreme value (0, -1, huge, NaN, inf); MHA / NRRD (text headers with the voxels after them):
a header line's value replaced by an extreme token, a line dropped or duplicated, or random
bytes set inside the header. Each case runs ``uda predict`` (in the worker process) and is
one of: "error" (exit 1, one error line), "mask" (exit 0 and the mask is on the input grid:
the shape and affine the reader gives the input), or a failure: "traceback" (an exception out
of main, or exit 3: an internal error), "bad mask" (not on the input grid), "hang" (no answer
within the time limit) or "crash" (the worker died). The parent (run_fuzz) restarts a dead or
hung worker at the next case.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
EXTREMES_INT = (0, -1, 1, 2, 7, 255, 32767, -32768, 65535, 2**31 - 1, -(2**31))
EXTREMES_FLOAT = (0.0, -1.0, 1e-30, 1e30, 3.4e38, float("nan"), float("inf"), -float("inf"))
EXTREME_TOKENS = ("0", "-1", "nan", "inf", "1e308", "99999999999", "abc", "", "1 2",
                  "0 0 0", "3 3 3 3", "MET_UNKNOWN", "float", "2147483647 2 2", "LOCAL",
                  "-5 4 4", "1e-300 1 1", "True", "raw", "gzip", "none")
#: (name, struct format, byte offset) of NIfTI-1 header fields worth lying about
NIFTI_FIELDS = (("sizeof_hdr", "i", 0), ("dim0", "h", 40), ("dim1", "h", 42),
                ("dim2", "h", 44), ("dim3", "h", 46), ("dim4", "h", 48),
                ("datatype", "h", 70), ("bitpix", "h", 72), ("pixdim0", "f", 76),
                ("pixdim1", "f", 80), ("pixdim2", "f", 84), ("pixdim3", "f", 88),
                ("vox_offset", "f", 108), ("scl_slope", "f", 112), ("scl_inter", "f", 116),
                ("qform_code", "h", 252), ("sform_code", "h", 254), ("quatern_b", "f", 256),
                ("quatern_c", "f", 260), ("qoffset_x", "f", 268), ("srow_x0", "f", 280),
                ("srow_y1", "f", 300), ("srow_z2", "f", 320))


def seeds(work: Path) -> dict[str, Path]:
    """The three valid volumes (16 x 18 x 10 voxels, 2 mm, a bright blob) under `work`."""
    import nibabel as nib
    import SimpleITK as sitk
    sys.path.insert(0, str(REPO))
    from tests.conftest import blob_volume

    work.mkdir(parents=True, exist_ok=True)
    data = blob_volume((16, 18, 10))
    paths = {"nii": work / "seed.nii", "mha": work / "seed.mha", "nrrd": work / "seed.nrrd"}
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), str(paths["nii"]))
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    image.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(image, str(paths["mha"]), useCompression=False)
    sitk.WriteImage(image, str(paths["nrrd"]), useCompression=False)
    return paths


def _text_header_end(raw: bytes, kind: str) -> int:
    if kind == "mha":
        start = raw.find(b"ElementDataFile")
        return raw.index(b"\n", start) + 1
    return raw.index(b"\n\n") + 2


def mutate(raw: bytes, kind: str, rng: np.random.Generator) -> tuple[bytes, str]:
    """One mutation of a seed file's bytes; returns (bytes, what was done)."""
    data = bytearray(raw)
    choice = rng.integers(3)
    if kind == "nii":
        if choice == 0:
            n = int(rng.integers(1, 5))
            where = rng.integers(0, 348, n)
            for w in where:
                data[w] = int(rng.integers(256))
            return bytes(data), f"bytes {sorted(where.tolist())} randomised"
        name, fmt, offset = NIFTI_FIELDS[rng.integers(len(NIFTI_FIELDS))]
        value = (EXTREMES_INT[rng.integers(len(EXTREMES_INT))] if fmt in "hi"
                 else EXTREMES_FLOAT[rng.integers(len(EXTREMES_FLOAT))])
        if fmt == "h":
            value = int(np.clip(value, -32768, 32767))
        struct.pack_into("<" + fmt, data, offset, value)
        return bytes(data), f"{name} = {value}"
    end = _text_header_end(raw, kind)
    header, body = raw[:end].decode("latin-1").splitlines(keepends=True), raw[end:]
    lines = [x for x in header if x.strip()]
    k = int(rng.integers(len(lines)))
    if choice == 0:
        separator = " = " if kind == "mha" else ": "
        key = lines[k].split(separator.strip(), 1)[0].strip()
        token = EXTREME_TOKENS[rng.integers(len(EXTREME_TOKENS))]
        lines[k] = f"{key}{separator}{token}\n"
        what = f"{key} = {token!r}"
    elif choice == 1:
        what = f"line {lines[k].strip()!r} " + ("dropped" if rng.integers(2) else "doubled")
        lines[k:k + 1] = [] if what.endswith("dropped") else [lines[k], lines[k]]
    else:
        text = bytearray("".join(lines).encode("latin-1"))
        where = rng.integers(0, len(text), int(rng.integers(1, 4)))
        for w in where:
            text[w] = int(rng.integers(32, 127))
        return bytes(text) + body, f"header bytes {sorted(where.tolist())} randomised"
    if kind == "nrrd" and not "".join(lines).endswith("\n\n"):
        lines.append("\n")
    return "".join(lines).encode("latin-1") + body, what


def case_file(work: Path, seeds_: dict[str, Path], seed: int, k: int) -> tuple[Path, str]:
    """Case k's mutated file under `work` and its description (deterministic in seed, k)."""
    rng = np.random.default_rng([seed, k])
    kind = ("nii", "mha", "nrrd")[k % 3]
    raw, what = mutate(seeds_[kind].read_bytes(), kind, rng)
    path = work / f"case{k:04d}.{kind}"
    path.write_bytes(raw)
    return path, f"{kind}: {what}"


def classify(path: Path, model: str, out: Path) -> tuple[str, str]:
    """Run `uda predict` on one file in this process: (verdict, detail)."""
    from uda_core.cli import main
    from uda_core.errors import UdaError
    from uda_core.io.readers import read_labels, read_volume

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["predict", "--model", model, "--out", str(out), "--overwrite",
                         "--device", "cpu", str(path)])
    except BaseException as exc:  # noqa: BLE001 - anything out of main is the failure sought
        return "traceback", f"{type(exc).__name__}: {exc}"
    lines = [x for x in err.getvalue().splitlines() if x.strip()]
    if code == 1 and len(lines) == 1 and ": error: " in lines[0]:
        return "error", lines[0]
    if code != 0:
        return "traceback", " | ".join(lines[-2:])
    mask_path = out / f"{path.stem}_seg.nii.gz"
    try:
        given, mask = read_volume(path), read_labels(mask_path)
    except UdaError as exc:
        return "bad mask", str(exc)
    if given.shape != mask.shape or not np.allclose(given.affine, mask.affine, atol=1e-4):
        return "bad mask", f"input {given.shape} vs mask {mask.shape}"
    mask_path.unlink()
    return "mask", f"{'x'.join(map(str, given.shape))}"


def worker(work: Path, model: str, start: int, count: int, seed: int) -> None:
    """Classify cases start .. start+count-1, one JSON line per case on stdout."""
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))   # a lying header may
    import torch  # not take the machine
    torch.set_num_threads(1)
    import uda_core.cli.predict  # noqa: F401 - imported before the first case's clock starts
    import uda_core.models.inference  # noqa: F401
    seeds_ = {kind: work / f"seed.{kind}" for kind in ("nii", "mha", "nrrd")}
    for k in range(start, start + count):
        path, what = case_file(work, seeds_, seed, k)
        print(json.dumps({"case": k, "what": what, "started": True}), flush=True)
        verdict, detail = classify(path, model, work / "out")
        print(json.dumps({"case": k, "what": what, "verdict": verdict, "detail": detail}),
              flush=True)
        path.unlink()


def run_fuzz(work: Path, model: str, count: int, seed: int = 16,
             hang_s: float = 10.0) -> list[dict]:
    """All `count` cases, in worker processes; one record per case (see the module doc)."""
    seeds(work)
    results: list[dict] = []
    k = 0
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    while k < count:
        process = subprocess.Popen(
            [sys.executable, __file__, str(work), model, str(k), str(count - k), str(seed)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        assert process.stdout is not None
        current, deadline = None, time.monotonic() + 120   # the worker's start-up
        while True:
            line = _read_line(process, deadline)
            if line is None:   # hung or died
                what = current["what"] if current else "?"
                if process.poll() is None:
                    process.kill()
                    verdict = "hang"
                else:
                    verdict = "crash"
                process.wait()
                results.append({"case": k, "what": what, "verdict": verdict,
                                "detail": f"exit {process.returncode}"})
                k += 1
                break
            record = json.loads(line)
            if record.get("started"):
                current, deadline = record, time.monotonic() + hang_s
                continue
            results.append(record)
            k = record["case"] + 1
            current, deadline = None, time.monotonic() + hang_s
            if k >= count:
                process.wait()
                break
    return results


def _read_line(process: subprocess.Popen, deadline: float) -> str | None:
    import selectors
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=max(0.0, deadline - time.monotonic())):
                line = process.stdout.readline()
                return line or None
    return None


if __name__ == "__main__":
    worker(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
           int(sys.argv[5]))
