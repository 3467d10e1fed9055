# lit configuration for q35: MLIR text tests run with LLVM 22's lit and
# FileCheck against the q35 binaries built by cargo.
import os
import lit.formats

config.name = "q35"
config.test_format = lit.formats.ShTest(execute_external=True)
config.suffixes = [".mlir", ".test"]
config.excludes = ["Inputs"]
config.test_source_root = os.path.dirname(__file__)
root = os.path.dirname(config.test_source_root)

# Binaries from `cargo build` (Q35_BIN_DIR overrides, e.g. target/release),
# then LLVM 22's FileCheck, not and mlir-opt.
bin_dir = os.environ.get("Q35_BIN_DIR", os.path.join(root, "target", "debug"))
llvm_bin = "/usr/lib/llvm-22/bin"
config.environment["PATH"] = os.pathsep.join(
    [bin_dir, llvm_bin, config.environment.get("PATH", os.environ.get("PATH", ""))]
)
config.substitutions.append(("%q35_irdl", os.path.join(root, "dialect", "irdl", "q35.irdl.mlir")))

# The integer path (int8 activations) needs AVX-512 VNNI and VBMI on the
# host: its tests say `REQUIRES: int8-path`.
try:
    with open("/proc/cpuinfo") as cpuinfo:
        flags = set(cpuinfo.read().split())
except OSError:
    flags = set()
if {"avx512f", "avx512bw", "avx512_vnni", "avx512vbmi"} <= flags:
    config.available_features.add("int8-path")
