"""What this machine is: auto-detected capabilities a worker advertises at registration.

Detection asks the tools each platform ships (psutil for the CPU and memory, ``nvidia-smi``,
``rocm-smi``, a Chromium's ``--version``, and torch where a GPU is likely) and never lets
one of them break or stall a worker: every probe has a timeout, and a probe that fails only
leaves its capabilities out (logged at debug level).

Declared capabilities (config ``[capabilities]``, ``--capability K=V``) are merged on top by
:func:`merge`; declared keys win and are listed under ``declared`` so users can tell a mock
worker's claims from what was measured.

The parsers (:func:`parse_nvidia_smi`, :func:`parse_rocm_smi`, :func:`parse_browser_version`)
are pure functions of a tool's output, so they are tested on sample text without the tool.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psutil

from dtf_bus import defaults

log = logging.getLogger(__name__)

NVIDIA_FIELDS = ("index", "name", "memory.total", "compute_cap", "driver_version")


def detect() -> dict[str, Any]:
    """Everything this machine can tell about itself; fast, and never raises."""
    caps = _cpu_and_memory()
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="dtf-detect") as pool:
        nvidia = pool.submit(_guard, _detect_nvidia)
        rocm = pool.submit(_guard, _detect_rocm)
        browser = pool.submit(_guard, _detect_browser)
        found = [nvidia.result(), rocm.result(), browser.result()]
    for extra in found:
        _add(caps, extra)
    torch_version = _installed_version("torch")
    if torch_version:
        caps["torch_version"] = torch_version
        if _torch_probe_worthwhile(caps):
            _add(caps, _guard(_detect_torch))
    return caps


def _add(caps: dict[str, Any], extra: dict[str, Any]) -> None:
    for item in extra.pop("hardware", []):
        if item not in caps["hardware"]:
            caps["hardware"].append(item)
    for key, value in extra.items():
        caps.setdefault(key, value)  # the first probe to report a key (nvidia-smi before torch) wins


def _guard(probe: Any) -> dict[str, Any]:
    try:
        return probe()
    except Exception as exc:  # a probe must never take the worker down
        log.debug("hardware probe %s failed: %s", probe.__name__, exc)
        return {}


def _cpu_and_memory() -> dict[str, Any]:
    memory = psutil.virtual_memory()
    caps: dict[str, Any] = {
        "hardware": ["cpu"],
        "hostname": socket.gethostname(),
        "platform": sys.platform,
        "arch": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_cores": psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        "cpu_physical_cores": psutil.cpu_count(logical=False) or 1,
        "memory_gb": round(memory.total / 2**30, 2),
        "python": platform.python_version(),
    }
    try:
        freq = psutil.cpu_freq()
    except Exception:  # some VMs and containers have no cpufreq; psutil may raise there
        freq = None
    if freq is not None and (freq.max or freq.current):
        caps["cpu_freq_mhz"] = round(freq.max or freq.current)
    return caps


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        out = _run(["sysctl", "-n", "machdep.cpu.brand_string"])
        if out:
            return out.strip()
    return platform.processor() or platform.machine()


def _run(argv: list[str], timeout: float = defaults.DETECT_TIMEOUT) -> str | None:
    """A tool's stdout, or None if it is missing, fails or hangs past the timeout."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("%s: %s", argv[0], exc)
        return None
    if proc.returncode != 0:
        log.debug("%s exited %d: %s", argv[0], proc.returncode, proc.stderr.strip()[:200])
        return None
    return proc.stdout


def _installed_version(dist: str) -> str | None:
    """A package's version without importing it (importing torch takes seconds)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------------- NVIDIA


def parse_nvidia_smi(text: str) -> list[dict[str, Any]]:
    """Rows of ``nvidia-smi --query-gpu=index,name,memory.total[,compute_cap],driver_version
    --format=csv,noheader,nounits`` (memory in MiB) as one dict per GPU."""
    gpus = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) not in (4, 5) or not cells[0].isdigit():
            continue
        index, name, memory = cells[0], cells[1], cells[2]
        capability = cells[3] if len(cells) == 5 else None
        gpus.append(
            {
                "index": int(index),
                "name": name,
                "memory_gb": _mib_to_gb(memory),
                "compute_capability": capability if capability and capability != "[N/A]" else None,
                "driver_version": cells[-1],
            }
        )
    return gpus


def _mib_to_gb(text: str) -> float | None:
    try:
        return round(float(text) / 1024, 2)
    except ValueError:
        return None


def nvidia_gpus() -> list[dict[str, Any]]:
    """The NVIDIA GPUs ``nvidia-smi`` reports (none when the tool is missing or fails)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    fmt = "--format=csv,noheader,nounits"
    out = _run([smi, f"--query-gpu={','.join(NVIDIA_FIELDS)}", fmt])
    if out is None:  # drivers before 510 do not know compute_cap
        fields = [f for f in NVIDIA_FIELDS if f != "compute_cap"]
        out = _run([smi, f"--query-gpu={','.join(fields)}", fmt])
    return parse_nvidia_smi(out or "")


def _detect_nvidia() -> dict[str, Any]:
    return gpu_capabilities("cuda", nvidia_gpus())


def gpu_capabilities(kind: str, gpus: list[dict[str, Any]]) -> dict[str, Any]:
    """The capabilities a set of GPUs of one kind (cuda, rocm) adds; empty when there are none.

    ``gpu_model`` and ``gpu_memory_gb`` describe the first device, the keys tasks most often
    require (``requires = { gpu_model = "..." }``); ``gpus`` lists them all.
    """
    if not gpus:
        return {}
    first = gpus[0]
    caps: dict[str, Any] = {
        "hardware": [kind],
        "gpu_count": len(gpus),
        "gpu_model": first.get("name"),
        "gpu_memory_gb": first.get("memory_gb"),
        "gpus": gpus,
    }
    if first.get("compute_capability"):
        caps["gpu_compute_capability"] = first["compute_capability"]
    if first.get("driver_version"):
        caps["gpu_driver_version"] = first["driver_version"]
    return caps


# ------------------------------------------------------------------------ ROCm


def parse_rocm_smi(text: str) -> list[dict[str, Any]]:
    """``rocm-smi --showproductname --showmeminfo vram --showdriverversion --json`` as one dict
    per GPU. Key spellings changed across ROCm releases, so several are accepted."""
    try:
        doc = json.loads(text)
    except ValueError:
        return []
    if not isinstance(doc, dict):
        return []
    driver = None
    system = doc.get("system")
    if isinstance(system, dict):
        driver = system.get("Driver version")
    gpus = []
    for key in sorted(k for k in doc if k.startswith("card")):
        card = doc[key]
        if not isinstance(card, dict):
            continue
        name = next(
            (card[k] for k in ("Card Series", "Card series", "Device Name", "Card model", "Card Model") if card.get(k)),
            key,
        )
        memory = card.get("VRAM Total Memory (B)")
        try:
            memory_gb = round(int(memory) / 2**30, 2) if memory is not None else None
        except ValueError:
            memory_gb = None
        index = key.removeprefix("card")
        gpus.append(
            {
                "index": int(index) if index.isdigit() else len(gpus),
                "name": str(name),
                "memory_gb": memory_gb,
                "driver_version": driver or card.get("Driver version"),
            }
        )
    return gpus


def _detect_rocm() -> dict[str, Any]:
    smi = shutil.which("rocm-smi")
    if smi is None:
        return {}
    out = _run([smi, "--showproductname", "--showmeminfo", "vram", "--showdriverversion", "--json"])
    return gpu_capabilities("rocm", parse_rocm_smi(out or ""))


# ----------------------------------------------------------------------- torch

_TORCH_PROBE = """
import json, torch
info = {"cuda_runtime": torch.version.cuda, "devices": [], "mps": False}
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        info["devices"].append({"index": i, "name": p.name, "memory_gb": round(p.total_memory / 2**30, 2),
                                "compute_capability": f"{p.major}.{p.minor}"})
mps = getattr(torch.backends, "mps", None)
info["mps"] = bool(mps is not None and mps.is_available())
print(json.dumps(info))
"""


def _torch_probe_worthwhile(caps: dict[str, Any]) -> bool:
    """Import torch (seconds) only where it can add something: a GPU nvidia-smi missed
    (the driver is loaded but the tool is absent, as in slim containers) or Apple's MPS."""
    if importlib.util.find_spec("torch") is None:
        return False
    if sys.platform == "darwin":
        return platform.machine() == "arm64"
    return "cuda" not in caps["hardware"] and os.path.exists("/proc/driver/nvidia/version")


def _detect_torch() -> dict[str, Any]:
    out = _run([sys.executable, "-c", _TORCH_PROBE], timeout=defaults.TORCH_PROBE_TIMEOUT)
    if not out:
        return {}
    info = json.loads(out.strip().splitlines()[-1])
    caps = gpu_capabilities("cuda", info.get("devices") or [])
    if caps and info.get("cuda_runtime"):
        caps["cuda_runtime"] = info["cuda_runtime"]
    if info.get("mps"):
        caps.setdefault("hardware", []).append("mps")
        caps.setdefault("gpu_model", "Apple " + (cpu_model() or "GPU"))
    return caps


# --------------------------------------------------------------------- browser


def parse_browser_version(text: str) -> tuple[str, str] | None:
    """``Chromium 120.0.6099.109 built on Debian`` -> ("Chromium", "120.0.6099.109")."""
    match = re.search(r"^(.*?)\s*(\d+(?:\.\d+)+)", text.strip())
    if match is None:
        return None
    return match.group(1).strip() or "Chromium", match.group(2)


def _detect_browser() -> dict[str, Any]:
    candidates = [shutil.which(name) for name in defaults.BROWSER_BINARIES]
    if sys.platform == "darwin":
        candidates += [
            "/Applications/Chromium.app/Contents/MacOS/Chromium",
            "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
        ]
    for binary in candidates:
        if not binary or not os.access(binary, os.X_OK):
            continue
        parsed = parse_browser_version(_run([binary, "--version"]) or "")
        if parsed is None:
            continue
        product, version = parsed
        # Chrome is Chromium underneath: tasks ask for the engine, `browser_product` says which.
        return {"browser": "chromium", "browser_version": version, "browser_product": product, "browser_binary": binary}
    return {}


# ----------------------------------------------------------------- declaration


def merge(detected: dict[str, Any], declared: list[tuple[str, Any]]) -> dict[str, Any]:
    """Apply declarations in order. ``hardware`` adds to the list instead of replacing it."""
    caps = dict(detected)
    hardware = list(caps.get("hardware", []))
    marked: list[str] = []
    for key, value in declared:
        if key == "hardware":
            for item in value if isinstance(value, list) else [value]:
                if str(item) not in hardware:
                    hardware.append(str(item))
        else:
            caps[key] = value
        if key not in marked:
            marked.append(key)
    caps["hardware"] = hardware
    caps["declared"] = marked
    return caps


def describe(caps: dict[str, Any]) -> str:
    """A one-line summary for ``dtf workers``: cores and memory, accelerators, browser."""
    parts = []
    if caps.get("cpu_cores"):
        parts.append(f"{caps['cpu_cores']} cpu")
    if caps.get("memory_gb") is not None:
        parts.append(f"{caps['memory_gb']:g} GB")
    if caps.get("gpu_model"):
        count = caps.get("gpu_count")
        gpu = f"{count}x {caps['gpu_model']}" if isinstance(count, int) and count > 1 else str(caps["gpu_model"])
        if caps.get("gpu_memory_gb"):
            gpu += f" {caps['gpu_memory_gb']:g} GB"
        parts.append(gpu)
    if caps.get("browser"):
        parts.append(" ".join(str(p) for p in (caps["browser"], caps.get("browser_version")) if p))
    if caps.get("speed") not in (None, 1, 1.0):
        parts.append(f"speed {caps['speed']:g}" if isinstance(caps["speed"], int | float) else f"speed {caps['speed']}")
    return ", ".join(parts)
