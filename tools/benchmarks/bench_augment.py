"""Translator inference throughput and peak memory per backend, device and batch size, as JSON.

    python tools/benchmarks/bench_augment.py [ARTIFACT] [--size 256] [--batch-sizes 1,8,32] [--repeats 5]
                                  [--warmup 3] [--images-per-repeat 32] [--backends eager,pt2,torchscript,onnx,aoti]
                                  [--devices cpu,cuda]

ARTIFACT is an exported direction folder (``cyclecmda export CKPT -o OUT --format pt2,onnx,torchscript``
-> ``OUT/a2b``). Without it, an untrained translator with the quickstart network (resnet_6blocks,
ngf 16, 3 -> 1 channels) is exported into a temporary folder, in the formats the chosen backends
run; nothing is trained.

Backends: ``eager`` (the generator rebuilt from ``weights.pt`` and ``meta.json["network"]``),
``pt2`` (``model.pt2``, ``torch.export.load(...).module()``), ``torchscript`` (``model.ts``, legacy),
``onnx`` (``model.onnx`` in ONNX Runtime) and ``aoti`` (``model.pt2`` compiled ahead of time by
AOTInductor, ``torch._inductor.aoti_compile_and_package``, for this machine, in the worker; its
compile time is reported as ``compile_s``), each on the CPU and, when available, CUDA (ONNX Runtime
only with its CUDA provider). Every backend is given sizes its network takes (multiples of
``size_multiple``). Each backend/device pair runs in
its own process so that one's memory does not hide another's. Per batch size: ``warmup`` untimed
forwards, then ``repeats`` timed repeats of at least ``images_per_repeat`` images each; the median
images per second is reported with every repeat's figure.

Peak memory (MiB), per batch size, over the memory in use once the model is loaded (before any
forward; reported as ``loaded_mib``), so it includes the runtime's one-time set-up and the largest
activations of the batch:
- CPU: the process's peak resident set during the batch size's forwards (Linux VmHWM, reset through
  /proc/self/clear_refs before each batch size) minus its RSS once loaded. Where the reset is not
  possible, the growth of ru_maxrss since loading (batch sizes run ascending).
- CUDA with torch: ``torch.cuda.max_memory_allocated`` (reset per batch size) minus the allocation
  once loaded.
- CUDA with ONNX Runtime: device memory in use (``torch.cuda.mem_get_info``; its arena keeps the
  peak) minus that once loaded.
On CUDA every backend's timing includes copying the batch to the device and the result back.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ("eager", "pt2", "torchscript", "onnx", "aoti")
MIB = 1024 * 1024
COMPILE_S: List[float] = []  # AOTInductor's compile time in this worker


# --- artifact ---------------------------------------------------------------------------------


FORMAT_OF = {"pt2": "pt2", "aoti": "pt2", "torchscript": "torchscript", "onnx": "onnx"}  # backend -> file it runs


def build_untrained_artifact(out_dir: Path, backends: Sequence[str] = BACKENDS) -> Path:
    """Export an untrained quickstart translator (a2b) into out_dir, in the formats ``backends`` run
    (``weights.pt`` always, for eager; ONNX only where the exporter is installed)."""
    from cyclecmda import __version__
    from cyclecmda.config import load_config, to_dict
    from cyclecmda.export.write import ExportError, export_checkpoint
    from cyclecmda.method.cyclegan import build_network, network_specs
    from cyclecmda.train.checkpoint import FORMAT, FORMAT_VERSION, atomic_torch_save

    cfg = load_config([ROOT / "configs" / "quickstart.yaml"])
    specs = network_specs(cfg.model, cfg.data.a.channels, cfg.data.b.channels)
    torch.manual_seed(0)
    names = ("gen_ab", "gen_ba")
    ckpt = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "config": to_dict(cfg),
        "networks": {n: specs[n] for n in names},
        "state": {n: build_network(specs[n]).state_dict() for n in names},
        "progress": {"step": 0, "epoch": 0, "batch_in_epoch": 0},
        # untrained: the full range of each side's bit depth
        "value_ranges": {d: [0.0, float(2 ** getattr(cfg.data, d).bit_depth - 1)] for d in ("a", "b")},
    }
    path = atomic_torch_save(ckpt, out_dir / "untrained.pt")
    formats = tuple(dict.fromkeys(FORMAT_OF[b] for b in backends if b in FORMAT_OF)) or ("pt2",)
    try:
        folders = export_checkpoint(path, out_dir / "export", ("a2b",), formats, overwrite=True)
    except ExportError:  # no onnx package: the ONNX backend is reported as unavailable
        without_onnx = tuple(f for f in formats if f != "onnx") or ("pt2",)
        folders = export_checkpoint(path, out_dir / "export", ("a2b",), without_onnx, overwrite=True)
    return folders[0]


def unavailable(backend: str, device: str, meta: Dict[str, Any]) -> Optional[str]:
    """Why a backend/device pair cannot run here, or None."""
    if device == "cuda" and not torch.cuda.is_available():
        return "CUDA is not available"
    if backend == "torchscript" and "torchscript" not in meta["files"]:
        return "the artifact has no model.ts"
    if backend in ("pt2", "aoti") and "pt2" not in meta["files"]:
        return "the artifact has no model.pt2"
    if backend == "onnx":
        if "onnx" not in meta["files"]:
            return "the artifact has no model.onnx (export with --format pt2,onnx)"
        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime is not installed"
        if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            return "ONNX Runtime has no CUDA provider"
    return None


# --- worker: one backend on one device, in its own process -----------------------------------


def load_runner(backend: str, device: str, folder: Path, meta: Dict[str, Any]) -> Callable[[np.ndarray], Any]:
    """A function running one forward on a float32 NCHW NumPy batch, returning the result on the CPU."""
    if backend == "onnx":
        import onnxruntime as ort

        provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
        session = ort.InferenceSession(str(folder / meta["files"]["onnx"]), providers=[provider])
        return lambda x: session.run(None, {"image": x})[0]
    if backend in ("pt2", "aoti"):
        program = torch.export.load(str(folder / meta["files"]["pt2"]))
        if device != "cpu":
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, device)
        if backend == "pt2":
            net = program.module()
        else:
            from torch._inductor import aoti_compile_and_package, aoti_load_package

            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="aoti_") as tmp:
                package = aoti_compile_and_package(program, package_path=str(Path(tmp) / "model.pt2"))
                compiled = aoti_load_package(package)
            COMPILE_S.append(round(time.perf_counter() - t0, 1))

            def run_compiled(x: np.ndarray) -> Any:
                with torch.inference_mode():
                    return compiled(torch.from_numpy(x).to(device)).cpu()

            return run_compiled
    elif backend == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            net = torch.jit.load(str(folder / meta["files"]["torchscript"]), map_location=device)
    else:
        from cyclecmda.export.artifact import PaddedNetwork
        from cyclecmda.method.cyclegan import build_network

        gen = build_network(meta["network"])
        gen.load_state_dict(torch.load(folder / meta["files"]["weights"], map_location="cpu", weights_only=True))
        net = PaddedNetwork(gen, meta["size_multiple"]).to(device)
    if backend != "pt2":  # an exported program's module is already in eval mode (and refuses .eval())
        net.eval()

    def run(x: np.ndarray) -> Any:
        with torch.inference_mode():
            return net(torch.from_numpy(x).to(device)).cpu()  # on CUDA: copies back and synchronises

    return run


class PeakMemory:
    """Peak memory (MiB) of one device during a batch size's forwards over its use once the model is loaded."""

    def __init__(self, backend: str, device: str) -> None:
        if device == "cuda":
            torch.cuda.synchronize()
            self.method = "cuda_mem_get_info" if backend == "onnx" else "torch.cuda.max_memory_allocated"
        else:
            self.method = "vmhwm_reset_per_batch" if _reset_hwm() else "ru_maxrss"
        self.loaded = self._current()

    def _current(self) -> int:
        if self.method == "cuda_mem_get_info":
            free, total = torch.cuda.mem_get_info()
            return total - free
        if self.method == "torch.cuda.max_memory_allocated":
            return torch.cuda.memory_allocated()
        return _status_kib("VmRSS") * 1024 if self.method == "vmhwm_reset_per_batch" else _maxrss()

    def start(self) -> None:
        """Forget earlier peaks (where the measure allows it)."""
        if self.method == "torch.cuda.max_memory_allocated":
            torch.cuda.reset_peak_memory_stats()
        elif self.method == "vmhwm_reset_per_batch":
            _reset_hwm()

    def peak_mib(self) -> float:
        if self.method == "cuda_mem_get_info":
            peak = self._current()
        elif self.method == "torch.cuda.max_memory_allocated":
            peak = torch.cuda.max_memory_allocated()
        elif self.method == "vmhwm_reset_per_batch":
            peak = _status_kib("VmHWM") * 1024
        else:
            peak = _maxrss()
        return round(max(0, peak - self.loaded) / MIB, 1)


def _maxrss() -> int:
    """Peak resident set of this process in bytes (ru_maxrss is KiB on Linux, bytes on macOS)."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def _reset_hwm() -> bool:
    """Reset the peak RSS to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _status_kib("VmHWM")
        return True
    except OSError:
        return False


def worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Measure one backend on one device for every batch size (ascending); return the figures."""
    folder, backend, device = Path(spec["artifact"]), spec["backend"], spec["device"]
    meta = json.loads((folder / "meta.json").read_text())
    run = load_runner(backend, device, folder, meta)
    memory = PeakMemory(backend, device)
    rng = np.random.default_rng(0)
    batches: Dict[str, Any] = {}
    for batch in sorted(spec["batch_sizes"]):
        x = rng.uniform(-1, 1, size=(batch, meta["input"]["channels"], spec["size"], spec["size"])).astype(np.float32)
        memory.start()
        for _ in range(spec["warmup"]):
            run(x)
        forwards = max(1, math.ceil(spec["images_per_repeat"] / batch))
        runs = []
        for _ in range(spec["repeats"]):
            t0 = time.perf_counter()
            for _ in range(forwards):
                run(x)
            runs.append(batch * forwards / (time.perf_counter() - t0))
        batches[f"batch_{batch}"] = {
            "images_per_s_median": round(statistics.median(runs), 2),
            "runs": [round(r, 2) for r in runs],
            "forwards_per_repeat": forwards,
            "peak_memory_mib": memory.peak_mib(),
        }
    out = {"memory_measure": memory.method, "loaded_mib": round(memory.loaded / MIB, 1), "batches": batches}
    if COMPILE_S:
        out["compile_s"] = COMPILE_S[0]
    return out


# --- driver -----------------------------------------------------------------------------------


def _int_list(text: str) -> List[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact", nargs="?", help="exported direction folder (default: untrained quickstart net)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--batch-sizes", type=_int_list, default=[1, 8, 32], help="comma-separated (default 1,8,32)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per batch size (default 5)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed forwards per batch size (default 3)")
    parser.add_argument("--images-per-repeat", type=int, default=32, help="at least this many images a repeat")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated subset of " + ",".join(BACKENDS))
    parser.add_argument("--devices", default="cpu,cuda", help="comma-separated; unavailable ones are reported as such")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # JSON spec: measure in this process
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if set(backends) - set(BACKENDS):
        parser.error(f"unknown backend(s) {sorted(set(backends) - set(BACKENDS))}; valid: {', '.join(BACKENDS)}")

    with tempfile.TemporaryDirectory(prefix="bench_augment_") as tmp:
        folder = Path(args.artifact) if args.artifact else build_untrained_artifact(Path(tmp), backends)
        meta = json.loads((folder / "meta.json").read_text())
        results: Dict[str, Dict[str, Any]] = {}
        for backend in backends:
            for device in [d.strip() for d in args.devices.split(",") if d.strip()]:
                reason = unavailable(backend, device, meta)
                if reason:
                    results.setdefault(backend, {})[device] = {"unavailable": reason}
                    continue
                spec = {"artifact": str(folder), "backend": backend, "device": device, "size": args.size,
                        "batch_sizes": args.batch_sizes, "repeats": args.repeats, "warmup": args.warmup,
                        "images_per_repeat": args.images_per_repeat}
                proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
                    results.setdefault(backend, {})[device] = {"failed": tail[0]}
                else:
                    results.setdefault(backend, {})[device] = json.loads(proc.stdout.strip().splitlines()[-1])

    print(json.dumps({
        "benchmark": "translate",
        "artifact": args.artifact or "untrained quickstart network (exported to a temporary folder)",
        "network": meta["network"],
        "size": args.size,
        "batch_sizes": args.batch_sizes,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "images_per_repeat": args.images_per_repeat,
        "memory": {
            "vmhwm_reset_per_batch": "CPU: peak RSS during the batch size (VmHWM reset through "
                                     "/proc/self/clear_refs) minus the RSS once the model is loaded",
            "ru_maxrss": "CPU: ru_maxrss growth since the model was loaded (batch sizes run ascending)",
            "torch.cuda.max_memory_allocated": "CUDA: peak allocation during the batch size minus that once loaded",
            "cuda_mem_get_info": "CUDA, ONNX Runtime: device memory in use (its arena keeps the peak) minus that once loaded",
        },
        "machine": {"cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "python": sys.version.split()[0], "torch": torch.__version__},
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
