# daxmode: the two commands a fresh machine needs are `make qemu-test` and `make test` (README).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
CACHE ?= .cache
# A bzImage (plus MODULES=<dir with lib/modules/VER>) to boot instead of Debian's 7.3.4, and the
# kernel's declared-skips file (qemu/skips/NAME.toml; default: the one whose release globs match).
KERNEL ?=
MODULES ?=
SKIPS ?=
HOSTS ?= 2
BACKEND ?= cxl

.PHONY: setup venv unit vm-test qemu-test test bench lint kernel kernel-test famfs-kernel famfs-kernel-test clean

# Host packages (QEMU >= 8.1, busybox, kmod, ...), the venv, and the default guest kernel.
setup:
	bash scripts/setup.sh

# Only the Python environment (enough for unit tests and lint).
venv:
	bash scripts/setup.sh --venv-only

unit: venv
	$(PY) -m pytest -q tests --ignore=tests/vm -m "not vm"

lint: venv
	$(VENV)/bin/ruff check daxmode mhd tests bench qemu scripts
	$(VENV)/bin/ruff format --check daxmode mhd tests bench qemu scripts
	$(VENV)/bin/mypy  # daxmode/ ([tool.mypy] in pyproject.toml)

# One nvdimm-backed guest: the real-kernel mode-transition runs (fast backend).
vm-test: setup
	bash qemu/cxl-mhd.sh --backend nvdimm --hosts 1 --suite tests/vm --results results/vm-test \
	  $(if $(KERNEL),--kernel $(KERNEL)) $(if $(MODULES),--modules $(MODULES)) $(if $(SKIPS),--skips $(SKIPS))

# Two hosts sharing one CXL memory device: every mode, cross-host data, famfs shared.
qemu-test: setup
	bash qemu/cxl-mhd.sh --backend $(BACKEND) --hosts $(HOSTS) --suite tests/vm --results results/qemu-test \
	  $(if $(KERNEL),--kernel $(KERNEL)) $(if $(MODULES),--modules $(MODULES)) $(if $(SKIPS),--skips $(SKIPS))

# Everything: lint, unit tests on the simulator and image files, then the real-kernel VM suite.
test: setup lint unit vm-test qemu-test

bench: setup
	$(PY) -m bench

# Build a test kernel from KSRC (+ PATCHES, KCONFIG) into .cache/kbuild; prints the --kernel/--modules
# arguments for qemu/cxl-mhd.sh (README-kernel). Not part of `make test`: a first build takes ~30 min.
kernel:
	bash qemu/build-kernel.sh KSRC="$(KSRC)" PATCHES="$(PATCHES)" ADAPT="$(ADAPT)" KCONFIG="$(KCONFIG)"

# Debian's linux-source-7.3 + qemu/patches, built (or reused) and booted on HOSTS guests sharing CXL memory.
kernel-test: setup
	bash qemu/kernel-test.sh HOSTS="$(HOSTS)" $(if $(KSRC),KSRC="$(KSRC)") $(if $(PATCHES),PATCHES="$(PATCHES)") \
	  $(if $(KCONFIG),KCONFIG="$(KCONFIG)")

# The famfs fuse series V10 (not in this repository: docs/kernel.md says how to get it) on Debian's
# linux-source-7.3 with our context adaptations, qemu/patches/famfs-7.3. PATCHES defaults to
# .cache/famfs-v10/famfs-v10.mbox; KSRC to the Debian source kernel-test.sh fetches.
FAMFS_PATCHES ?= $(CACHE)/famfs-v10/famfs-v10.mbox
famfs-kernel:
	bash qemu/kernel-test.sh --build-only FAMFS=1 $(if $(KSRC),KSRC="$(KSRC)") \
	  PATCHES="$(or $(PATCHES),$(FAMFS_PATCHES))" $(if $(KCONFIG),KCONFIG="$(KCONFIG)")

# That kernel booted on HOSTS guests sharing one CXL device: kernel-level famfs checks, then the
# famfs mount tests of the VM suite with the famfs kernel (dax data path; docs/kernel.md).
famfs-kernel-test: setup
	bash qemu/kernel-test.sh FAMFS=1 HOSTS="$(HOSTS)" $(if $(VM_LOCK),VM_LOCK="$(VM_LOCK)") $(if $(KSRC),KSRC="$(KSRC)") \
	  $(if $(SKIPS),SKIPS="$(SKIPS)") \
	  PATCHES="$(or $(PATCHES),$(FAMFS_PATCHES))" $(if $(KCONFIG),KCONFIG="$(KCONFIG)")

clean:
	rm -rf results build *.egg-info
