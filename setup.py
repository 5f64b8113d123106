"""Builds evpy._core from csrc/ (the reactor in csrc/core/, the types in csrc/).

Environment knobs:
  EVPY_WERROR=1    compile with -Werror (CI sets it)
  EVPY_SANITIZE=1  AddressSanitizer + UndefinedBehaviorSanitizer build
  EVPY_DEBUG=1     -O0 -g, assertions on
  EVPY_FAULTS=1    test-only fault injection in the syscall wrappers
                   (csrc/core/faults.h; never in a release build)
"""
import glob
import os

from setuptools import Extension, setup

cflags = ["-std=c11", "-Wall", "-Wextra", "-Wshadow", "-Wno-unused-parameter",
          "-Wno-missing-field-initializers", "-fvisibility=hidden"]
ldflags = []
macros = [("_GNU_SOURCE", "1")]
if os.environ.get("EVPY_WERROR") == "1" or os.environ.get("CI") == "true":
    cflags.append("-Werror")
if os.environ.get("EVPY_DEBUG") == "1" or os.environ.get("EVPY_SANITIZE") == "1":
    cflags += ["-O0", "-g3", "-UNDEBUG"]
else:
    cflags += ["-O2"]
if os.environ.get("EVPY_FAULTS") == "1":
    macros.append(("EVPY_FAULTS", "1"))
if os.environ.get("EVPY_SANITIZE") == "1":
    san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
           "-fno-omit-frame-pointer"]
    cflags += san
    ldflags += san

sources = sorted(glob.glob("csrc/*.c")) + sorted(glob.glob("csrc/core/*.c"))

setup(
    ext_modules=[
        Extension(
            "evpy._core",
            sources=sources,
            include_dirs=["csrc", "csrc/core"],
            define_macros=macros,
            extra_compile_args=cflags,
            extra_link_args=ldflags,
            depends=glob.glob("csrc/*.h") + glob.glob("csrc/core/*.h"),
        )
    ],
)
