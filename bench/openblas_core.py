"""Which BLAS core PyTorch runs, and the fair one for this CPU.

PyTorch 1.13 from Debian does its matrix products through whatever libblas.so.3 the system
alternatives name. Two ways that flatters lsgrad, both seen on these machines:
  - the reference (Netlib) BLAS is installed instead of OpenBLAS: tens of times slower;
  - OpenBLAS 0.3.21 does not recognise a newer CPU (AMD Zen 4, some Xeons) and runs a generic core
    (Prescott, or Haswell's AVX2 kernels on an AVX-512 CPU), 2-5x slower than with
    OPENBLAS_CORETYPE=SkylakeX.
`fair_blas()` probes PyTorch's BLAS in a child process (OpenBLAS reads OPENBLAS_CORETYPE once, when
it loads) and, when the core is below what the CPU can run, sets OPENBLAS_CORETYPE for this process
before torch is imported. Call it before `import torch`; `corename()` then reads the core in use.
"""

import ctypes
import os
import subprocess
import sys

# OpenBLAS x86-64 cores by the instruction set their kernels use (lower case, as reported).
AVX512_CORES = {"skylakex", "cooperlake", "sapphirerapids"}
AVX2_CORES = AVX512_CORES | {"haswell", "zen"}

PROBE = ("import torch, sys; sys.path.insert(0, %r); import openblas_core; "
         "print(openblas_core.corename())") % os.path.dirname(os.path.abspath(__file__))


def _blas_libraries():
    with open("/proc/self/maps") as f:
        paths = {line.split()[-1] for line in f if "/" in line}
    return sorted(p for p in paths if "blas" in os.path.basename(p))


def corename():
    """The OpenBLAS core of the BLAS this process loaded (call after importing torch), or a note
    naming the library when it is not OpenBLAS."""
    libs = _blas_libraries()
    for path in libs:
        try:
            fn = ctypes.CDLL(path).openblas_get_corename
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_char_p
        return fn().decode()
    return "not OpenBLAS (" + (", ".join(os.path.basename(p) for p in libs) or "no BLAS loaded") + ")"


def set_threads(n):
    """openblas_set_num_threads(n) on the loaded OpenBLAS, if any (torch.set_num_threads does not)."""
    for path in _blas_libraries():
        try:
            fn = ctypes.CDLL(path).openblas_set_num_threads
        except (OSError, AttributeError):
            continue
        fn.argtypes = [ctypes.c_int]
        fn(n)
        return


def cpu_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def best_core(flags):
    """The OpenBLAS core this CPU should run: SkylakeX with AVX-512 (F, DQ, BW, VL), Haswell with
    AVX2 + FMA, else None (OpenBLAS's own choice)."""
    if {"avx512f", "avx512dq", "avx512bw", "avx512vl"} <= flags:
        return "SkylakeX"
    if {"avx2", "fma"} <= flags:
        return "Haswell"
    return None


def _probe(env):
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def fair_blas():
    """Before `import torch`: makes PyTorch's OpenBLAS use the best core for this CPU, whatever
    OPENBLAS_CORETYPE the environment held (an inherited setting can be as unfair as a generic
    core). Returns (the core OpenBLAS picks by itself, the core it will use); exits with a hint when
    PyTorch's BLAS is not OpenBLAS (unless LSGRAD_ALLOW_REFERENCE_BLAS=1)."""
    os.environ.pop("OPENBLAS_CORETYPE", None)
    default = _probe(dict(os.environ))
    if default.startswith("not OpenBLAS"):
        msg = (f"PyTorch's BLAS is {default}: the comparison would be unfair. Install OpenBLAS "
               "(bench/deps.sh: apt-get install libopenblas-pthread-dev) or set LSGRAD_ALLOW_REFERENCE_BLAS=1.")
        if os.environ.get("LSGRAD_ALLOW_REFERENCE_BLAS") != "1":
            sys.exit(msg)
        print("warning: " + msg, file=sys.stderr)
        return default, default
    want = best_core(cpu_flags())
    have = default.lower()
    generic = (want == "SkylakeX" and have not in AVX512_CORES) or (want == "Haswell" and have not in AVX2_CORES)
    if not generic:
        return default, default
    os.environ["OPENBLAS_CORETYPE"] = want
    return default, _probe(dict(os.environ))
