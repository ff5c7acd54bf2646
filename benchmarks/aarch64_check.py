"""Do the int8 models give the same landmarks on aarch64 (Raspberry Pi, Graviton, Apple Silicon
under Linux) as on this x86-64 CPU? Checked without such a machine: an arm64 Python with
onnxruntime's aarch64 wheel runs under qemu-user, on emulated ARM CPUs of three kinds.

    python benchmarks/aarch64_check.py [--step 9] [--cpus cortex-a72 cortex-a76 max]
                                       [--models pipnet-fast pipnet-r18 | PATH ...]
                                       [--eight-bit] [--float-arm] [--prepare-only] [--no-prepare]

Method (the AVX2-only check of tests/test_integrity.py, with an ARM userland): for every
``--step``-th 300-W test image, the face that matches its ground truth is detected and cropped
once, natively, by the SDK's crop rule (YuNet-n box -> model crop square -> crop -> network
input), and the inputs are saved to a .npy. The arm64 Python then runs each model on them at
batch 1 with the SDK's own session options (``pipnet_sdk.runtime.make_session``, one thread) and
decodes them with the SDK's NumPy decoder (``pipnet_sdk.decode``), both imported from this
checkout; the same inputs run natively through ``LandmarkModel`` at batch 1. Figures per model
and emulated CPU: landmark differences in image pixels (max, mean), faces moved by more than
0.01 px, faces whose raw network outputs are bit-identical, mean move in % of the inter-ocular
distance.

Emulated CPUs (qemu 7.2 names) and the int8 kernels onnxruntime picks on them (MLAS,
``platform.cpp``: by HWCAP, read through pytorch/cpuinfo):
  cortex-a72  ARMv8.0 NEON, no dot product (Raspberry Pi 4): the NEON u8/s8 GEMM and ConvSym kernels
              (UMULL/SMULL + pairwise add into 32 bits)
  cortex-a76  + dot product, no i8mm (Raspberry Pi 5; Graviton2 / Neoverse N1 has the same
              features): UDOT/SDOT GEMM and ConvSym kernels
  max         everything qemu has: dot product, i8mm, SVE, SME (Graviton3/4, recent Apple cores):
              UMMLA/SMMLA GEMM kernels, the dot-product ConvSym kernels

Setup (done by this script when missing, under .cache/aarch64/, from Debian's and PyPI's
registries only; needs root for apt-get install qemu-user, otherwise nothing is installed):
qemu-user from Debian; an arm64 sysroot made of Debian bookworm's arm64 .deb files of
python3.11 and the libraries it needs (downloaded with a private apt state, unpacked with dpkg-deb:
the system's apt and dpkg are untouched); numpy and onnxruntime aarch64 wheels (the versions
installed here) unpacked into a folder put on PYTHONPATH. qemu 7.2 shows the host's x86
/proc/cpuinfo to the emulated program, which crashes onnxruntime's CPU detection
(pytorch/cpuinfo finds no ARM processor); the script writes an ARM /proc/cpuinfo for the emulated
CPU into the sysroot, which qemu's -L prefix serves in its place.

--eight-bit also checks the 0.5.0 weights with full 8-bit int8 weights (the files that saturated
on AVX2-only CPUs), taken from git history and brought to format 3 without the 7-bit step;
--float-arm runs the ARM side with graph optimisation off (the QDQ graph in float), i.e. a
kernel that computes differently from this CPU's: what a real difference looks like here.
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
    "cortex-a76": ("0x41", "0x4", "0xd0b", 1,
                   "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm "
                   "lrcpc dcpop asimddp"),
    "neoverse-n1": ("0x41", "0x4", "0xd0c", 1,
                    "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm "
                    "lrcpc dcpop asimddp ssbs"),
    # qemu's own "max" MIDR: implementer 0 (software), part 0x051 ('Q')
    "max": ("0x00", "0x0", "0x051", 0,
            "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma "
            "lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg "
            "dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svebf16 i8mm bf16 "
            "dgh bti mte sme"),
}
PX_MOVED = 0.01  # a face "moved" when one of its landmarks moved by more than this, in image pixels
NEEDS = ("needs qemu-aarch64 and an arm64 Python with onnxruntime under .cache/aarch64 "
         "(python benchmarks/aarch64_check.py --prepare-only)")

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
        conf.write_text(f'APT::Architecture "arm64";\nAPT::Architectures {{ "arm64"; }};\n'
                        f'Dir::State::Lists "{apt}/lists";\nDir::State::status "{apt}/status";\n'
                        f'Dir::Cache "{apt}/cache";\n')
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
        _run([sys.executable, "-m", "pip", "download", "-q", "-d", wheels, "--only-binary=:all:", "--no-deps",
              "--implementation", "cp", "--python-version", pyver,
              *[a for tag in ("manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64")
                for a in ("--platform", tag)],
              f"onnxruntime=={v['onnxruntime']}", f"numpy=={v['numpy']}"], log)
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
    block = (f"BogoMIPS\t: 100.00\nFeatures\t: {features}\nCPU implementer\t: {impl}\n"
             f"CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\nCPU revision\t: {rev}\n\n")
    n = os.cpu_count() or 1
    (SYSROOT / "proc").mkdir(exist_ok=True)
    (SYSROOT / "proc" / "cpuinfo").write_text("".join(f"processor\t: {i}\n{block}" for i in range(n)))


def run_emulated(cpu: str, jobs: Sequence[tuple[Path, Path, Path]], optimize: bool = True,
                 every_output: bool = False, timeout: float = 3600) -> dict[str, Any]:
    """Run WORKER on the emulated ``cpu`` for (model, inputs.npy, outputs.npz) jobs; returns what
    it reports (versions, CPU features the emulated program sees). ``every_output``: save all
    the outputs of each file as they are (for int8_activation_outputs files)."""
    import pipnet_sdk

    write_cpuinfo(cpu)
    sdk_root = Path(pipnet_sdk.__file__).resolve().parents[1]  # the SDK imported here, not an installed copy
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": f"{site_dir()}:{sdk_root}",
           "PYTHONNOUSERSITE": "1", "OMP_NUM_THREADS": "1", "LC_ALL": "C.UTF-8"}
    cmd = [qemu(), "-L", str(SYSROOT), "-cpu", cpu, str(SYSROOT / "usr" / "bin" / PYTHON), "-c", WORKER,
           "1" if optimize else "0", "1" if every_output else "0",
           *[str(Path(p).resolve()) for job in jobs for p in job]]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=tempfile.gettempdir())
    if done.returncode != 0:
        raise RuntimeError(f"the emulated run on {cpu} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ the native side
def shared_path() -> Path:
    return Path(os.environ.get("PIPNET_SHARED") or ROOT.parent / "shared")


def test_faces(shared_dir: Path, step: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, ground-truth 0-based points) for every step-th 300-W test image."""
    import cv2

    files = sorted(p for p in (shared_dir / "data" / "300w" / "test").rglob("*") if p.suffix in (".jpg", ".png"))
    out = []
    for f in files[::step]:
        text = f.with_suffix(".pts").read_text().split("{")[1].split("}")[0]
        out.append((cv2.imread(str(f)), np.array(text.split(), float).reshape(-1, 2) - 1))
    return out


def labeled_inputs(model: str, shared_dir: Path, step: int) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """The LandmarkModel (one thread) and, for the faces found that match the ground truth of every
    step-th test image: network inputs, crop squares, true points. The same rule as
    tests/test_integrity.py (YuNet-n box -> the model's crop square -> crop -> preprocess)."""
    from pipnet_sdk import Landmarker
    from pipnet_sdk.crop import crop_faces

    landmarker = Landmarker(model, threads=1)
    lm = landmarker.model
    crops, squares, truth = [], [], []
    for image, points in test_faces(shared_dir, step):
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

    raw = [model.forward(x[i:i + 1]) for i in range(len(x))]
    raw = [np.concatenate(r) for r in zip(*raw)]
    candidates, scores = raw if model.spec.format == 3 else candidates_from_maps(*raw)
    points, _ = model.decode(raw)
    return {"points": points, "candidates": candidates, "scores": scores}


def compare(here: dict[str, np.ndarray], there: dict[str, np.ndarray], squares: np.ndarray,
            truth: np.ndarray) -> dict[str, Any]:
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
                data = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{where}"],
                                      capture_output=True, check=True).stdout
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
    raw = [session.run(names, {session.get_inputs()[0].name: x[i:i + 1]}) for i in range(len(x))]
    here = [np.concatenate(r) for r in zip(*raw)]
    np.save(tmp / "acts-x.npy", x)
    quantized = [i for i, a in enumerate(here) if a.dtype in (np.uint8, np.int8)]
    for cpu in cpus:
        run_emulated(cpu, [(path, tmp / "acts-x.npy", tmp / f"acts-{cpu}.npz")], every_output=True)
        with np.load(tmp / f"acts-{cpu}.npz") as z:
            there = [z[f"arr_{i}"] for i in range(len(z.files))]
        differ = [names[i] for i in quantized if not np.array_equal(here[i], there[i])]
        values = sum(here[i].size for i in quantized)
        print(f"  {Path(model).stem} on {cpu}: {len(quantized)} quantized activations ({values} values over "
              f"{len(x)} faces): {len(quantized) - len(differ)} bit-identical"
              + (f"; differ: {differ}" if differ else ""))


# --------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--step", type=int, default=9, help="every STEP-th 300-W test image (9: 62 faces)")
    ap.add_argument("--cpus", nargs="+", default=list(DEFAULT_CPUS), choices=sorted(CPUINFO))
    ap.add_argument("--models", nargs="+", default=["pipnet-fast", "pipnet-r18"],
                    help="registry names or .onnx paths")
    ap.add_argument("--eight-bit", action="store_true", help="also the 0.5.0 files with 8-bit weights")
    ap.add_argument("--float-arm", action="store_true",
                    help="ARM side with graph optimisation off (QDQ in float): what a real difference looks like")
    ap.add_argument("--int8-activations", action="store_true",
                    help="also compare every quantized activation bit for bit (the first model, every 4th face)")
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
            print(f"cannot prepare the emulated aarch64 userland: {e}\n{__doc__.split('Setup')[1]}",
                  file=sys.stderr)
            return 2
    if a.prepare_only:
        print(f"ready: {qemu()} -L {SYSROOT} ... {PYTHON}, PYTHONPATH={site_dir()}")
        return 0

    shared = shared_path()
    if not (shared / "data" / "300w" / "test").is_dir():
        print(f"needs the 300-W test faces in {shared}/data/300w/test (set PIPNET_SHARED)", file=sys.stderr)
        return 2
    models = list(a.models)
    if a.eight_bit:
        models += [str(p) for p in eight_bit_files(CACHE / "models")]
    qemu_version = _run([qemu(), "--version"], lambda _: None).splitlines()[0]
    print(f"host: {cpu_line()}; {platform.python_version()}, onnxruntime {versions()['onnxruntime']}, "
          f"numpy {versions()['numpy']}; {qemu_version}")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        native = {}
        for i, name in enumerate(models):
            t = time.perf_counter()
            model, x, squares, truth = labeled_inputs(name, shared, a.step)
            np.save(tmp / f"x{i}.npy", x)
            native[name] = (model, native_outputs(model, x), squares, truth)
            print(f"{Path(name).stem} {model.spec.version} ({model.spec.extra.get('precision', '?')}): "
                  f"{len(x)} faces cut and run natively in {time.perf_counter() - t:.1f} s")
        for cpu in a.cpus:
            jobs = [(Path(native[n][0].path), tmp / f"x{i}.npy", tmp / f"{cpu}-{i}.npz") for i, n in enumerate(models)]
            t = time.perf_counter()
            info = run_emulated(cpu, jobs, optimize=not a.float_arm)
            took = time.perf_counter() - t
            feats = " ".join(k for k, v in info["features"].items() if v)
            print(f"\nemulated {cpu}: {info['machine']}, Python {info['python']}, onnxruntime {info['onnxruntime']}, "
                  f"numpy {info['numpy']}; CPU features seen: {feats}; {took:.0f} s"
                  + ("; graph optimisation OFF on the ARM side" if a.float_arm else ""))
            for i, name in enumerate(models):
                model, here, squares, truth = native[name]
                with np.load(jobs[i][2]) as z:
                    there = {k: z[k] for k in z.files}
                r = compare(here, there, squares, truth)
                rows.append({"model": Path(name).stem, "version": model.spec.version, "cpu": cpu,
                             "onnxruntime_arm": info["onnxruntime"], "features": info["features"],
                             "float_arm": a.float_arm, **r})
                print(f"  {Path(name).stem:24s} {r['faces']} faces: max {r['max_px']:.2e} px, mean "
                      f"{r['mean_px']:.2e} px, {r['faces_moved']} moved > {PX_MOVED} px, raw outputs "
                      f"identical on {r['raw_identical']}, mean {r['mean_iod_pct']:.4f} % IOD, "
                      f"max candidate diff {r['max_candidate_diff']:.2e}")
        if a.int8_activations:
            print("\nquantized activations, this CPU vs emulated:")
            first = models[0]
            compare_int8_activations(first, np.load(tmp / "x0.npy")[::4], a.cpus, tmp)
    if a.json:
        a.json.write_text(json.dumps({"host": cpu_line(), "qemu": qemu_version, "step": a.step, "rows": rows},
                                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
