"""Do the int8 models give the same landmarks on aarch64 (Raspberry Pi, Graviton, Apple Silicon
under Linux) as on this x86-64 CPU? Checked without such a machine: an arm64 Python with
onnxruntime's aarch64 wheel runs under qemu-user, on emulated ARM CPUs of three kinds.
Results and their meaning: docs/aarch64.md.

    python benchmarks/aarch64_check.py [--step 9] [--cpus cortex-a72 cortex-a76 max]
                                       [--models pipnet-fast pipnet-r18 | PATH ...]
                                       [--eight-bit] [--float-arm] [--int8-activations]
                                       [--add-rounding] [--prepare-only] [--no-prepare] [--json OUT]

Method (the AVX2-only check of tests/test_integrity.py, with an ARM userland): for every
``--step``-th 300-W test image, the face that matches its ground truth is detected and cropped
once, natively, by the SDK's crop rule (YuNet-n box -> model crop square -> crop -> network
input), and the inputs are saved to a .npy. The arm64 Python then runs each model on them at
batch 1 with the SDK's own session options (``pipnet_sdk.runtime.make_session``, one thread) and
decodes them with the SDK's NumPy decoder (``pipnet_sdk.decode``), both imported from this
checkout; the same inputs run natively through ``LandmarkModel`` at batch 1. Figures per model
and emulated CPU: landmark differences in image pixels (max, mean), faces moved by more than
0.01 px, faces whose raw network outputs are bit-identical, mean move in % of the inter-ocular
distance, largest difference of a raw output (crop units).

Emulated CPUs (qemu 7.2 names) and what onnxruntime's MLAS picks on them (platform.cpp, by the
HWCAP bits the emulated program sees, which the script prints):
  cortex-a72  ARMv8.0, no dot product (Raspberry Pi 4): NEON int8 convolution kernels
  cortex-a76  + dot product (Raspberry Pi 5; Graviton2 / Neoverse N1 have the same features):
              SDOT/UDOT int8 convolution kernels
  max         dot product, i8mm, SVE, SME (closest to Graviton3/4 and recent Apple cores): the
              dot-product convolution kernels, i8mm (SMMLA/UMMLA) GEMMs, SVE float kernels
The residual adds (QLinearAdd) take one kernel on every ARM CPU (NEON, fixed-point) and another
on every x86 CPU with AVX2 (float32 FMA); add_rounding_pairs() emulates both exactly.

Setup (done by this script when missing, under .cache/aarch64/, from Debian's and PyPI's
registries only; apt-get install qemu-user needs root, nothing else is installed):
qemu-user from Debian; an arm64 sysroot made of Debian bookworm's arm64 .deb files of
python3.11 and the libraries it needs (downloaded with a private apt state, unpacked with dpkg-deb:
the system's apt and dpkg are untouched); numpy and onnxruntime aarch64 wheels (the versions
installed here) unpacked into a folder put on PYTHONPATH. qemu 7.2 shows the host's x86
/proc/cpuinfo to the emulated program, which crashes onnxruntime's CPU detection
(pytorch/cpuinfo finds no ARM processor); the script writes an ARM /proc/cpuinfo for the emulated
CPU into the sysroot, which qemu's -L prefix serves in its place.

Options:
  --eight-bit         also the 0.5.0 weights with full 8-bit int8 weights (the files that
                      saturated on AVX2-only CPUs), taken from git history, format 3, no 7-bit step
  --float-arm         the ARM side with graph optimisation off (the QDQ graph in float): what a
                      kernel that computes differently does to the landmarks
  --int8-activations  also every quantized activation of the first model, bit for bit
  --add-rounding      instead: the input pairs of each residual add that round differently on ARM,
                      the test faces that meet one (natively, every test image), their moves on the
                      first --cpus, and the same for the file with ARM-safe add scales
Emulated timings mean nothing; no speed is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

CACHE = ROOT / ".cache" / "aarch64"
SYSROOT = CACHE / "sysroot"
PYTHON = "python3.11"  # Debian bookworm's: the wheels are downloaded for this version
APT_PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6")
SKIP_DEBS = ("dpkg", "tar")  # pulled in by apt's dependency rules, not needed to run Python
DEFAULT_CPUS = ("cortex-a72", "cortex-a76", "max")
# what each emulated CPU reports in /proc/cpuinfo: (implementer, variant, part, revision, features)
CPUINFO = {
    "cortex-a72": ("0x41", "0x0", "0xd08", 3, "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"),
    "cortex-a76": (
        "0x41",
        "0x4",
        "0xd0b",
        1,
        "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
    ),
    "neoverse-n1": (
        "0x41",
        "0x4",
        "0xd0c",
        1,
        "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs",
    ),
    # qemu's own "max" MIDR: implementer 0 (software), part 0x051 ('Q')
    "max": (
        "0x00",
        "0x0",
        "0x051",
        0,
        "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma "
        "lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg "
        "dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svebf16 i8mm bf16 "
        "dgh bti mte sme",
    ),
}
PX_MOVED = 0.01  # a face "moved" when one of its landmarks moved by more than this, in image pixels
NEEDS = (
    "needs qemu-aarch64 and an arm64 Python with onnxruntime under .cache/aarch64 "
    "(python benchmarks/aarch64_check.py --prepare-only)"
)

# Runs on the emulated CPU: argv = optimize (1/0), every output (1/0), then (model, inputs.npy,
# outputs.npz) triples.
WORKER = r"""
import ctypes, json, platform, sys
import numpy as np
import onnxruntime as ort
from pipnet_sdk.decode import candidates_from_maps, merge, vote_matrix
from pipnet_sdk.runtime import make_session

libc = ctypes.CDLL(None)
libc.getauxval.restype, libc.getauxval.argtypes = ctypes.c_ulong, [ctypes.c_ulong]
hwcap, hwcap2 = libc.getauxval(16), libc.getauxval(26)  # AT_HWCAP, AT_HWCAP2
features = {"asimd": hwcap >> 1 & 1, "asimddp": hwcap >> 20 & 1, "sve": hwcap >> 22 & 1,
            "i8mm": hwcap2 >> 13 & 1, "sve2": hwcap2 >> 1 & 1, "sme": hwcap2 >> 23 & 1}
optimize, every_output = sys.argv[1] == "1", sys.argv[2] == "1"
for model, inputs, outputs in zip(*[iter(sys.argv[3:])] * 3):
    session = make_session(model, threads=1, optimize=optimize)
    if every_output:  # a file from int8_activation_outputs: every output, raw, per face
        x = np.load(inputs)
        names = [o.name for o in session.get_outputs()]
        raw = [session.run(names, {session.get_inputs()[0].name: x[i:i + 1]}) for i in range(len(x))]
        np.savez(outputs, *[np.concatenate(r) for r in zip(*raw)])
        continue
    meta = json.loads(session.get_modelmeta().custom_metadata_map["pipnet"])
    names = ["candidates", "scores"] if meta["format"] == 3 else \
        ["score", "offset_x", "offset_y", "neighbor_x", "neighbor_y"]
    x = np.load(inputs)
    raw = [session.run(names, {session.get_inputs()[0].name: x[i:i + 1]}) for i in range(len(x))]
    raw = [np.concatenate(r) for r in zip(*raw)]
    candidates, scores = raw if meta["format"] == 3 else candidates_from_maps(*raw)
    points = merge(candidates, vote_matrix(np.asarray(meta["neighbor_indices"])), True)
    np.savez(outputs, points=points, candidates=candidates, scores=scores)
print(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
                  "onnxruntime": ort.__version__, "numpy": np.__version__,
                  "features": {k: bool(v) for k, v in features.items()}}))
"""


# ---------------------------------------------------------------------------- the arm64 userland
def versions() -> dict[str, str]:
    """onnxruntime and numpy versions installed here: the aarch64 wheels downloaded are the same."""
    import onnxruntime

    return {"onnxruntime": onnxruntime.__version__, "numpy": np.__version__}


def site_dir() -> Path:
    v = versions()
    return CACHE / f"site-{PYTHON}-ort{v['onnxruntime']}-numpy{v['numpy']}"


def qemu() -> str | None:
    return shutil.which("qemu-aarch64")


def missing() -> str | None:
    """Why the emulated run cannot happen here (None when it can)."""
    if platform.machine() != "x86_64":
        return f"emulates aarch64 from x86-64; this machine is {platform.machine()}"
    if qemu() is None:
        return NEEDS.replace("needs qemu-aarch64 and", "needs qemu-aarch64 (Debian: apt-get install qemu-user) and")
    if not (SYSROOT / "usr" / "bin" / PYTHON).exists() or not (site_dir() / "onnxruntime").is_dir():
        return NEEDS
    return None


def _run(cmd: Sequence[str], log: Callable[[str], None], **kw: Any) -> str:
    log("$ " + " ".join(str(c) for c in cmd))
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(str(c) for c in cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def prepare(log: Callable[[str], None] = print) -> None:
    """Make whatever is missing: qemu-user (apt-get, as root), the arm64 sysroot (Debian arm64
    .deb files unpacked, private apt state under .cache/aarch64/apt), the aarch64 wheels (pip
    download, unpacked). Raises RuntimeError with the command that failed."""
    if platform.machine() != "x86_64":
        raise RuntimeError(f"this check emulates aarch64 on x86-64; this machine is {platform.machine()}")
    if qemu() is None:
        if shutil.which("apt-get") is None or os.geteuid() != 0:
            raise RuntimeError("qemu-aarch64 is missing: install qemu-user (Debian: apt-get install qemu-user)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        _run(["apt-get", "update", "-qq"], log, env=env)
        _run(["apt-get", "install", "-y", "-qq", "qemu-user"], log, env=env)
    if not (SYSROOT / "usr" / "bin" / PYTHON).exists():
        for tool in ("apt-get", "dpkg-deb"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"making the arm64 sysroot needs Debian's {tool}")
        apt = CACHE / "apt"
        for d in (apt / "lists" / "partial", apt / "cache" / "archives" / "partial", CACHE / "debs"):
            d.mkdir(parents=True, exist_ok=True)
        (apt / "status").touch()
        conf = apt / "apt.conf"  # arm64 only, its own lists, status and cache: the system's apt is untouched
        conf.write_text(
            f'APT::Architecture "arm64";\nAPT::Architectures {{ "arm64"; }};\n'
            f'Dir::State::Lists "{apt}/lists";\nDir::State::status "{apt}/status";\n'
            f'Dir::Cache "{apt}/cache";\n'
        )
        env = {**os.environ, "APT_CONFIG": str(conf), "DEBIAN_FRONTEND": "noninteractive"}
        _run(["apt-get", "update", "-qq"], log, env=env)
        plan = _run(["apt-get", "-s", "install", "--no-install-recommends", *APT_PACKAGES], log, env=env)
        debs = [line.split()[1] for line in plan.splitlines() if line.startswith("Inst ")]
        debs = [d for d in debs if d not in SKIP_DEBS]
        _run(["apt-get", "download", "-q", *debs], log, env=env, cwd=CACHE / "debs")
        tmp = SYSROOT.with_name("sysroot.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        for deb in sorted((CACHE / "debs").glob("*_arm64.deb")) + sorted((CACHE / "debs").glob("*_all.deb")):
            if deb.name.split("_")[0] in debs:
                _run(["dpkg-deb", "-x", deb, tmp], lambda _: None)
        tmp.rename(SYSROOT)
        log(f"arm64 sysroot: {SYSROOT} ({len(debs)} packages)")
    site = site_dir()
    if not (site / "onnxruntime").is_dir():
        v = versions()
        wheels = CACHE / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        pyver = PYTHON.removeprefix("python")
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "-d",
                wheels,
                "--only-binary=:all:",
                "--no-deps",
                "--implementation",
                "cp",
                "--python-version",
                pyver,
                *[
                    a
                    for tag in ("manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64")
                    for a in ("--platform", tag)
                ],
                f"onnxruntime=={v['onnxruntime']}",
                f"numpy=={v['numpy']}",
            ],
            log,
        )
        tmp = site.with_name(site.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        import zipfile

        for name in ("onnxruntime", "numpy"):
            whl = sorted(wheels.glob(f"{name}-{v[name]}-cp{pyver.replace('.', '')}-*aarch64*.whl"))[-1]
            with zipfile.ZipFile(whl) as z:
                z.extractall(tmp)
        for so in tmp.rglob("*.so*"):  # zipfile drops the exec bits the loader does not need, keep them anyway
            so.chmod(0o755)
        tmp.rename(site)
        log(f"aarch64 wheels: {site}")


def write_cpuinfo(cpu: str) -> None:
    """An ARM /proc/cpuinfo for the emulated CPU (2 processors, like the host's
    /sys/devices/system/cpu, which the emulated program also reads), in the sysroot."""
    impl, variant, part, rev, features = CPUINFO[cpu]
    block = (
        f"BogoMIPS\t: 100.00\nFeatures\t: {features}\nCPU implementer\t: {impl}\n"
        f"CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\nCPU revision\t: {rev}\n\n"
    )
    n = os.cpu_count() or 1
    (SYSROOT / "proc").mkdir(exist_ok=True)
    (SYSROOT / "proc" / "cpuinfo").write_text("".join(f"processor\t: {i}\n{block}" for i in range(n)))


def run_emulated(
    cpu: str,
    jobs: Sequence[tuple[Path, Path, Path]],
    optimize: bool = True,
    every_output: bool = False,
    timeout: float = 3600,
) -> dict[str, Any]:
    """Run WORKER on the emulated ``cpu`` for (model, inputs.npy, outputs.npz) jobs; returns what
    it reports (versions, CPU features the emulated program sees). ``every_output``: save all
    the outputs of each file as they are (for int8_activation_outputs files)."""
    import pipnet_sdk

    write_cpuinfo(cpu)
    sdk_root = Path(pipnet_sdk.__file__).resolve().parents[1]  # the SDK imported here, not an installed copy
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": f"{site_dir()}:{sdk_root}",
        "PYTHONNOUSERSITE": "1",
        "OMP_NUM_THREADS": "1",
        "LC_ALL": "C.UTF-8",
    }
    cmd = [
        qemu(),
        "-L",
        str(SYSROOT),
        "-cpu",
        cpu,
        str(SYSROOT / "usr" / "bin" / PYTHON),
        "-c",
        WORKER,
        "1" if optimize else "0",
        "1" if every_output else "0",
        *[str(Path(p).resolve()) for job in jobs for p in job],
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=tempfile.gettempdir())
    if done.returncode != 0:
        raise RuntimeError(f"the emulated run on {cpu} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ the native side
def sample_faces(shared_dir: Path, step: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, ground-truth 0-based points) for every step-th 300-W test image."""
    import cv2

    from export.data import read_pts

    files = sorted(p for p in (shared_dir / "data" / "300w" / "test").rglob("*") if p.suffix in (".jpg", ".png"))
    return [(cv2.imread(str(f)), read_pts(f.with_suffix(".pts"), np.float64)) for f in files[::step]]


def labeled_inputs(model: str, shared_dir: Path, step: int) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """The LandmarkModel (one thread) and, for the faces found that match the ground truth of every
    step-th test image: network inputs, crop squares, true points. The same rule as
    tests/test_integrity.py uses (YuNet-n box -> the model's crop square -> crop -> preprocess)."""
    from pipnet_sdk import Landmarker
    from pipnet_sdk.crop import crop_faces

    landmarker = Landmarker(model, threads=1)
    lm = landmarker.model
    crops, squares, truth = [], [], []
    for image, points in sample_faces(shared_dir, step):
        boxes, _ = landmarker.detect_boxes(image)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        lo, hi = points.min(0), points.max(0)
        hits = np.flatnonzero(((centres > lo) & (centres < hi)).all(1))
        if len(hits):
            sq = landmarker.squares(boxes[hits[:1]])
            crops.append(crop_faces(image, sq, lm.spec.input_size))
            squares.append(sq)
            truth.append(points)
    return lm, lm.preprocess(np.concatenate(crops)), np.concatenate(squares), np.stack(truth)


def native_outputs(model: Any, x: np.ndarray) -> dict[str, np.ndarray]:
    """This CPU's points and raw outputs, each input run alone (batch 1), as the emulated side."""
    from pipnet_sdk.decode import candidates_from_maps

    raw = [model.forward(x[i : i + 1]) for i in range(len(x))]
    raw = [np.concatenate(r) for r in zip(*raw)]
    candidates, scores = raw[:2] if model.spec.format == 3 else candidates_from_maps(*raw[:5])
    points, _ = model.decode(raw)  # a visibility output, last, is not compared
    return {"points": points, "candidates": candidates, "scores": scores}


def compare(
    here: dict[str, np.ndarray], there: dict[str, np.ndarray], squares: np.ndarray, truth: np.ndarray
) -> dict[str, Any]:
    """Landmark differences in image pixels and in % of the inter-ocular distance (eye centres)."""
    from pipnet_sdk.crop import to_image

    moved = np.linalg.norm(to_image(here["points"], squares) - to_image(there["points"], squares), axis=-1)
    iod = np.linalg.norm(truth[:, 36:42].mean(1) - truth[:, 42:48].mean(1), axis=-1)
    same = [np.array_equal(here[k][i], there[k][i]) for i in range(len(moved)) for k in ("candidates", "scores")]
    return {
        "faces": len(moved),
        "max_px": float(moved.max()),
        "mean_px": float(moved.mean()),
        "faces_moved": int((moved.max(1) > PX_MOVED).sum()),
        "raw_identical": int(np.sum(np.reshape(same, (len(moved), 2)).all(1))),
        "mean_iod_pct": float((moved.mean(1) / iod * 100).mean()),
        "max_candidate_diff": float(np.abs(here["candidates"] - there["candidates"]).max()),
    }


def eight_bit_files(out_dir: Path, log: Callable[[str], None] = print) -> list[Path]:
    """The last int8 files with full 8-bit weights (0.5.0, before the 7-bit remedy of 0.5.1) from
    git history, brought from format 2 to 3 without touching the weights, sealed."""
    import onnx

    from export.onnx_meta import file_metadata, save_with_metadata
    from export.upgrade import candidates_output

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ("pipnet-fast", "pipnet-r18"):
        dst = out_dir / f"{name}-8bit.onnx"
        if not dst.exists():
            where = f"pipnet_sdk/models/{name}.onnx"
            for commit in _run(["git", "-C", ROOT, "log", "--format=%H", "--", where], lambda _: None).split():
                data = subprocess.run(
                    ["git", "-C", str(ROOT), "show", f"{commit}:{where}"], capture_output=True, check=True
                ).stdout
                m = onnx.load_from_string(data)
                meta = file_metadata(m)
                if meta.get("precision", "").startswith("int8") and "7-bit" not in meta["precision"]:
                    break
            else:
                raise RuntimeError(f"no {where} with 8-bit int8 weights in git history")
            if meta["format"] == 2:
                candidates_output(m, meta["num_landmarks"], meta["num_neighbors"])
                meta["format"] = 3
            save_with_metadata(m, dst, meta)
            log(f"{dst.name}: {name} {meta['version']} of {commit[:10]}, 8-bit weights, format {meta['format']}")
        paths.append(dst)
    return paths


def int8_activation_outputs(src: str | os.PathLike, dst: Path) -> list[str]:
    """A copy of ``src`` whose outputs are every quantized (uint8/int8) activation of the QDQ graph,
    the outputs of its QuantizeLinear nodes (onnxruntime's fused integer nodes keep those names),
    then the file's own outputs. Not sealed: run it with make_session, not LandmarkModel."""
    import onnx
    from onnx import helper

    m = onnx.load(str(src))
    g = m.graph
    init = {t.name: t for t in g.initializer}
    acts = []
    for n in g.node:
        if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in init:
            acts.append(helper.make_tensor_value_info(n.output[0], init[n.input[2]].data_type, None))
    own = list(g.output)
    del g.output[:]
    g.output.extend(acts + own)
    onnx.save(m, str(dst))
    return [o.name for o in g.output]


def compare_int8_activations(model: str, x: np.ndarray, cpus: Sequence[str], tmp: Path) -> None:
    """Every quantized activation of ``model``, here and on each emulated CPU, compared bit for bit."""
    from pipnet_sdk.hub import resolve
    from pipnet_sdk.runtime import make_session

    path = tmp / f"{Path(model).stem}-int8-activations.onnx"
    names = int8_activation_outputs(resolve(model, "landmark"), path)
    session = make_session(path, threads=1)
    raw = [session.run(names, {session.get_inputs()[0].name: x[i : i + 1]}) for i in range(len(x))]
    here = [np.concatenate(r) for r in zip(*raw)]
    np.save(tmp / "acts-x.npy", x)
    quantized = [i for i, a in enumerate(here) if a.dtype in (np.uint8, np.int8)]
    for cpu in cpus:
        run_emulated(cpu, [(path, tmp / "acts-x.npy", tmp / f"acts-{cpu}.npz")], every_output=True)
        with np.load(tmp / f"acts-{cpu}.npz") as z:
            there = [z[f"arr_{i}"] for i in range(len(z.files))]
        differ = [names[i] for i in quantized if not np.array_equal(here[i], there[i])]
        values = sum(here[i].size for i in quantized)
        print(
            f"  {Path(model).stem} on {cpu}: {len(quantized)} quantized activations ({values} values over "
            f"{len(x)} faces): {len(quantized) - len(differ)} bit-identical" + (f"; differ: {differ}" if differ else "")
        )


def add_rounding_table(sa: float, zpa: int, sb: float, zpb: int, sc: float, zpc: int) -> np.ndarray:
    """(256, 256) booleans for a uint8 QLinearAdd with these scales and zero points: True where
    MLAS's NEON kernel and its x86 AVX2 kernel give different outputs for inputs (a, b)."""
    f32 = np.float32
    a = np.arange(256, dtype=np.float64)[:, None]
    b = np.arange(256, dtype=np.float64)[None, :]
    ra, rb = f32(f32(sa) / f32(sc)), f32(f32(sb) / f32(sc))
    # AVX2: fixed = zpC - (rA zpA + rB zpB); t = fma(b, rB, fixed); t = fma(a, rA, t); round half even
    fixed_variants = {
        f32(zpc - f32(f32(ra * zpa) + f32(rb * zpb))),
        f32(zpc - f32(float(ra) * zpa + float(f32(rb * zpb)))),
        f32(zpc - f32(float(rb) * zpb + float(f32(ra * zpa)))),
    }
    x86 = []
    for fixed in fixed_variants:
        t = (b * float(rb) + float(fixed)).astype(np.float32).astype(np.float64)
        t = (a * float(ra) + t).astype(np.float32).astype(np.float64)
        x86.append(np.clip(np.rint(t), 0, 255))
    # NEON: MlasCalcQLinearAddParameters, then the integer kernel
    exponent = int(np.frombuffer(f32(max(ra, rb)).tobytes(), np.uint32)[0] >> 23) - 127
    shift = 21 - exponent
    ma = int(np.rint(float(f32(ra * f32(2.0**shift)))))
    mb = int(np.rint(float(f32(rb * f32(2.0**shift)))))
    usable = (
        6.103515625e-05 <= ra < 256
        and 6.103515625e-05 <= rb < 256
        and 13 <= shift <= 31
        and ma < 0x400000
        and mb < 0x400000
        and (ma >= 0x200000 or mb >= 0x200000)
    )
    if not usable:  # NEON falls back to a plain float loop, not emulated here: count every pair
        return np.ones((256, 256), bool)
    acc = (np.arange(256)[:, None] - zpa) * ma + (np.arange(256)[None, :] - zpb) * mb
    acc = acc - (acc < 0)
    neon = np.clip(np.clip((acc + (1 << (shift - 1))) >> shift, -32768, 32767) + zpc, 0, 255)
    return np.any([neon != x for x in x86], axis=0)


def arm_safe_add_scales(src: str | os.PathLike, dst: Path, max_steps: int = 64) -> list[tuple[str, int]]:
    """A proposed remedy, written to ``dst`` (sealed; not a shipped file): for each residual Add,
    in graph order, nudge the scale of its output quantization by k * 2**-20 (relative, the
    smallest |k| that works) so that add_rounding_table has no differing pair, i.e. MLAS's NEON
    and AVX2 kernels agree on every uint8 input. The Q node and every DQ that reads its output get
    the new scale (a new initializer each time: scales may be shared). Returns (output, k) per Add."""
    import onnx
    from onnx import numpy_helper

    from export.onnx_meta import file_metadata, save_with_metadata
    from pipnet_sdk.hub import resolve

    m = onnx.load(str(resolve(str(src), "landmark")))
    g = m.graph
    init = {t.name: t for t in g.initializer}
    arrays = {n: numpy_helper.to_array(t) for n, t in init.items()}
    value = {n: float(v.reshape(-1)[0]) for n, v in arrays.items() if v.size == 1}
    made_by = {o: n for n in g.node for o in n.output}
    used_by: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            used_by.setdefault(i, []).append(n)
    changes = []
    for add in [n for n in g.node if n.op_type == "Add"]:
        dqs = [made_by.get(i) for i in add.input]
        if not all(d is not None and d.op_type == "DequantizeLinear" for d in dqs):
            continue
        nxt = used_by.get(add.output[0], [])
        if len(nxt) == 1 and nxt[0].op_type == "Relu":
            nxt = used_by.get(nxt[0].output[0], [])
        q = next((n for n in nxt if n.op_type == "QuantizeLinear"), None)
        if q is None:
            continue
        (sa, zpa), (sb, zpb) = ((value[d.input[1]], int(value[d.input[2]])) for d in dqs)
        sc, zpc = value[q.input[1]], int(value[q.input[2]])
        for k in sorted(range(-max_steps, max_steps + 1), key=lambda k: (abs(k), k)):
            new = float(np.float32(sc * (1 + k * 2.0**-20)))
            if not add_rounding_table(sa, zpa, sb, zpb, new, zpc).any():
                break
        else:
            raise RuntimeError(f"no scale within {max_steps} steps makes {q.output[0]} agree on ARM")
        if k:
            name = f"{q.output[0]}_scale_arm_safe"
            g.initializer.append(numpy_helper.from_array(np.array(new, np.float32), name))
            value[name] = new
            for n in [q] + [d for d in used_by.get(q.output[0], []) if d.op_type == "DequantizeLinear"]:
                n.input[1] = name
        changes.append((q.output[0], k))
    save_with_metadata(m, dst, file_metadata(m))
    return changes


def add_rounding_pairs(model: str | os.PathLike) -> dict[tuple[str, str, str], np.ndarray]:
    """For each QLinearAdd that onnxruntime makes of ``model`` (a residual Add between Q/DQ pairs),
    keyed by the names of its uint8 inputs A, B and output: a (256, 256) boolean table, True
    where MLAS's NEON kernel and its x86 AVX2 kernel give different outputs for inputs (a, b).
    NEON (qladd.cpp): scale ratios as 22-bit fixed-point multipliers, a rounding shift that rounds
    half away from zero. AVX2 (qladd_avx2.cpp): float32 FMAs, rounding half to even. The constant
    part of the AVX2 sum may or may not be contracted into an FMA by the compiler: a pair counts
    if it differs either way. Emulated exactly (every product and sum fits a float64 mantissa)."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from pipnet_sdk.hub import resolve

    path = str(resolve(str(model), "landmark"))
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        opts.log_severity_level = 3
        ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        m = onnx.load(opts.optimized_model_filepath)
    init = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    # the QDQ graph's names for each QLinearAdd's inputs and output (the tensors int8_activation_outputs
    # exposes), found by their scales: DQ(qa) + DQ(qb) -> Add [-> Relu] -> Q -> qout
    qdq = onnx.load(path).graph
    qinit = {t.name: numpy_helper.to_array(t) for t in qdq.initializer}
    made_by = {o: n for n in qdq.node for o in n.output}
    used_by: dict[str, list] = {}
    for n in qdq.node:
        for i in n.input:
            used_by.setdefault(i, []).append(n)
    names_by_scales = {}
    for add in (n for n in qdq.node if n.op_type == "Add"):
        dqs = [made_by.get(i) for i in add.input]
        if not all(d is not None and d.op_type == "DequantizeLinear" for d in dqs):
            continue
        nxt = used_by.get(add.output[0], [])
        if len(nxt) == 1 and nxt[0].op_type == "Relu":
            nxt = used_by.get(nxt[0].output[0], [])
        q = next((n for n in nxt if n.op_type == "QuantizeLinear"), None)
        if q is not None:
            key = tuple(float(qinit[d.input[1]]) for d in dqs) + (float(qinit[q.input[1]]),)
            names_by_scales[key] = (dqs[0].input[0], dqs[1].input[0], q.output[0])
    tables = {}
    for node in m.graph.node:
        if node.op_type != "QLinearAdd" or init[node.input[2]].dtype != np.uint8:
            continue
        sa, zpa, sb, zpb, sc, zpc = (init[node.input[i]] for i in (1, 2, 4, 5, 6, 7))
        names = names_by_scales.get((float(sa), float(sb), float(sc)))
        if names is None:  # inputs swapped by the optimizer
            qb_, qa_, qo_ = names_by_scales[(float(sb), float(sa), float(sc))]
            names = (qa_, qb_, qo_)
        tables[names] = add_rounding_table(float(sa), int(zpa), float(sb), int(zpb), float(sc), int(zpc))
    return tables


def scan_add_rounding(model: str, shared_dir: Path, step: int) -> dict[str, Any]:
    """Run ``model``'s int8 graph here on every step-th test face and count, from
    add_rounding_pairs, the residual-add elements where an ARM CPU would round differently."""
    from pipnet_sdk.runtime import make_session

    tables = add_rounding_pairs(model)
    lm, x, squares, truth = labeled_inputs(model, shared_dir, step)
    with tempfile.TemporaryDirectory() as tmp:
        names = int8_activation_outputs(lm.path, Path(tmp) / "acts.onnx")
        session = make_session(Path(tmp) / "acts.onnx", threads=1)
    hits = np.zeros(len(x), int)
    elements = 0
    for i in range(len(x)):
        acts = dict(zip(names, session.run(names, {session.get_inputs()[0].name: x[i : i + 1]})))
        for (ka, kb, _), table in tables.items():
            hits[i] += int(table[acts[ka], acts[kb]].sum())
            elements += acts[ka].size if i == 0 else 0
    return {
        "faces": len(x),
        "adds": len(tables),
        "pairs": {k[2]: int(t.sum()) for k, t in tables.items()},
        "elements_per_face": elements,
        "faces_hit": np.flatnonzero(hits).tolist(),
        "hits": hits,
        "inputs": x,
        "squares": squares,
        "truth": truth,
        "model": lm,
    }


def _nme_pct(points: np.ndarray, squares: np.ndarray, truth: np.ndarray) -> float:
    """Mean NME in % of the outer-eye-corner distance (points 36, 45), image coordinates."""
    from pipnet_sdk.crop import to_image

    err = np.linalg.norm(to_image(points, squares) - truth, axis=-1).mean(1)
    return float((err / np.linalg.norm(truth[:, 36] - truth[:, 45], axis=-1)).mean() * 100)


def add_rounding_report(models: Sequence[str], shared: Path, step: int, cpu: str, out: Path | None) -> int:
    """--add-rounding: per model, the input pairs of each residual add that round differently on
    ARM, the test faces that meet one here, how far those faces (and 10 that meet none) move on
    the emulated ``cpu``; then the same for the file with ARM-safe add scales."""
    from benchmarks.cpu import cpu_line
    from pipnet_sdk.crop import to_image

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in models:
            safe = CACHE / "models" / f"{Path(name).stem}-arm-safe.onnx"
            safe.parent.mkdir(parents=True, exist_ok=True)
            nudges = [k for _, k in arm_safe_add_scales(name, safe)]
            shipped_points = None
            for label, path in ((Path(name).stem, name), (f"{Path(name).stem}, ARM-safe add scales", str(safe))):
                t = time.perf_counter()
                r = scan_add_rounding(path, shared, step)
                hit = np.array(r["faces_hit"], int)
                rest = np.setdiff1d(np.arange(r["faces"]), hit)
                idx = np.concatenate([hit, rest[:: max(1, len(rest) // 10)][:10]])
                np.save(tmp / "x.npy", r["inputs"][idx])
                run_emulated(cpu, [(Path(r["model"].path), tmp / "x.npy", tmp / "arm.npz")])
                with np.load(tmp / "arm.npz") as z:
                    there = z["points"]
                here = native_outputs(r["model"], r["inputs"][idx])["points"]
                sq, truth = r["squares"][idx], r["truth"][idx]
                moved = np.linalg.norm(to_image(here, sq) - to_image(there, sq), axis=-1)
                iod = np.linalg.norm(truth[:, 36:42].mean(1) - truth[:, 42:48].mean(1), axis=-1)
                n = len(hit)
                points = native_outputs(r["model"], r["inputs"])["points"]
                row = {
                    "file": label,
                    "faces": r["faces"],
                    "pairs_per_add": list(r["pairs"].values()),
                    "faces_hit": n,
                    "hit_moved": int((moved[:n].max(1) > PX_MOVED).sum()),
                    "hit_max_px": float(moved[:n].max()) if n else 0.0,
                    "hit_mean_iod_pct": float((moved[:n].mean(1) / iod[:n] * 100).mean()) if n else 0.0,
                    "others": len(idx) - n,
                    "others_max_px": float(moved[n:].max()),
                    "nme_pct": _nme_pct(points, r["squares"], r["truth"]),
                }
                if shipped_points is None:
                    shipped_points = points
                else:
                    row["nudges_2^-20"] = nudges
                    shift = np.linalg.norm(
                        to_image(points, r["squares"]) - to_image(shipped_points, r["squares"]), axis=-1
                    )
                    row["faces_moved_vs_shipped_here"] = int((shift.max(1) > PX_MOVED).sum())
                rows.append(row)
                print(
                    f"\n{label}: input pairs (of 65536) that round differently on ARM, per residual add: "
                    f"{row['pairs_per_add']}"
                    + (f"; scales nudged by {nudges} x 2^-20" if "nudges_2^-20" in row else "")
                )
                print(
                    f"  {r['faces']} test faces, {n} meet such a pair here; on emulated {cpu} {row['hit_moved']} "
                    f"of them moved > {PX_MOVED} px (max {row['hit_max_px']:.3g} px, mean "
                    f"{row['hit_mean_iod_pct']:.3f} % IOD); {row['others']} others: "
                    f"max {row['others_max_px']:.2e} px"
                )
                print(
                    f"  NME here {row['nme_pct']:.3f} % (all {r['faces']} faces)"
                    + (
                        f"; {row['faces_moved_vs_shipped_here']} faces moved > {PX_MOVED} px here vs the shipped file"
                        if "faces_moved_vs_shipped_here" in row
                        else ""
                    )
                    + f"; {time.perf_counter() - t:.0f} s"
                )
    if out:
        out.write_text(json.dumps({"host": cpu_line(), "cpu": cpu, "step": step, "rows": rows}, indent=1))
    return 0


# --------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--step", type=int, help="every STEP-th 300-W test image (default 9: 62 faces; 1 with --add-rounding)"
    )
    ap.add_argument("--cpus", nargs="+", default=list(DEFAULT_CPUS), choices=sorted(CPUINFO))
    ap.add_argument("--models", nargs="+", default=["pipnet-fast", "pipnet-r18"], help="registry names or .onnx paths")
    ap.add_argument("--eight-bit", action="store_true", help="also the 0.5.0 files with 8-bit weights")
    ap.add_argument(
        "--float-arm",
        action="store_true",
        help="ARM side with graph optimisation off (QDQ in float): what a real difference looks like",
    )
    ap.add_argument(
        "--int8-activations",
        action="store_true",
        help="also compare every quantized activation bit for bit (the first model, every 4th face)",
    )
    ap.add_argument(
        "--add-rounding",
        action="store_true",
        help="instead: find, natively, the test faces whose residual adds round differently on ARM "
        "(every test image unless --step is given), run them (and 10 others) on the first "
        "--cpus, and the same with the ARM-safe add scales (arm_safe_add_scales)",
    )
    ap.add_argument("--prepare-only", action="store_true", help="make the emulated userland and stop")
    ap.add_argument("--no-prepare", action="store_true", help="fail instead of downloading what is missing")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    a = ap.parse_args(argv)

    from benchmarks.cpu import cpu_line

    if a.no_prepare:
        why = missing()
        if why:
            print(why, file=sys.stderr)
            return 2
    else:
        try:
            prepare()
        except RuntimeError as e:
            print(f"cannot prepare the emulated aarch64 userland: {e}\n{__doc__.split('Setup')[1]}", file=sys.stderr)
            return 2
    if a.prepare_only:
        print(f"ready: {qemu()} -L {SYSROOT} ... {PYTHON}, PYTHONPATH={site_dir()}")
        return 0

    from export.data import shared_dir

    shared = shared_dir()
    if not (shared / "data" / "300w" / "test").is_dir():
        print(f"needs the 300-W test faces in {shared}/data/300w/test (set PIPNET_SHARED)", file=sys.stderr)
        return 2
    models = list(a.models)
    if a.eight_bit:
        models += [str(p) for p in eight_bit_files(CACHE / "models")]
    qemu_version = _run([qemu(), "--version"], lambda _: None).splitlines()[0]
    print(
        f"host: {cpu_line()}; {platform.python_version()}, onnxruntime {versions()['onnxruntime']}, "
        f"numpy {versions()['numpy']}; {qemu_version}"
    )
    if a.add_rounding:
        return add_rounding_report(models, shared, a.step or 1, a.cpus[0], a.json)
    a.step = a.step or 9

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        native = {}
        for i, name in enumerate(models):
            t = time.perf_counter()
            model, x, squares, truth = labeled_inputs(name, shared, a.step)
            np.save(tmp / f"x{i}.npy", x)
            native[name] = (model, native_outputs(model, x), squares, truth)
            print(
                f"{Path(name).stem} {model.spec.version} ({model.spec.extra.get('precision', '?')}): "
                f"{len(x)} faces cut and run natively in {time.perf_counter() - t:.1f} s"
            )
        for cpu in a.cpus:
            jobs = [(Path(native[n][0].path), tmp / f"x{i}.npy", tmp / f"{cpu}-{i}.npz") for i, n in enumerate(models)]
            t = time.perf_counter()
            info = run_emulated(cpu, jobs, optimize=not a.float_arm)
            took = time.perf_counter() - t
            feats = " ".join(k for k, v in info["features"].items() if v)
            print(
                f"\nemulated {cpu}: {info['machine']}, Python {info['python']}, onnxruntime {info['onnxruntime']}, "
                f"numpy {info['numpy']}; CPU features seen: {feats}; {took:.0f} s"
                + ("; graph optimisation OFF on the ARM side" if a.float_arm else "")
            )
            for i, name in enumerate(models):
                model, here, squares, truth = native[name]
                with np.load(jobs[i][2]) as z:
                    there = {k: z[k] for k in z.files}
                r = compare(here, there, squares, truth)
                rows.append(
                    {
                        "model": Path(name).stem,
                        "version": model.spec.version,
                        "cpu": cpu,
                        "onnxruntime_arm": info["onnxruntime"],
                        "features": info["features"],
                        "float_arm": a.float_arm,
                        **r,
                    }
                )
                print(
                    f"  {Path(name).stem:24s} {r['faces']} faces: max {r['max_px']:.2e} px, mean "
                    f"{r['mean_px']:.2e} px, {r['faces_moved']} moved > {PX_MOVED} px, raw outputs "
                    f"identical on {r['raw_identical']}, mean {r['mean_iod_pct']:.4f} % IOD, "
                    f"max candidate diff {r['max_candidate_diff']:.2e}"
                )
        if a.int8_activations:
            print("\nquantized activations, this CPU vs emulated:")
            first = models[0]
            compare_int8_activations(first, np.load(tmp / "x0.npy")[::4], a.cpus, tmp)
    if a.json:
        a.json.write_text(
            json.dumps({"host": cpu_line(), "qemu": qemu_version, "step": a.step, "rows": rows}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
