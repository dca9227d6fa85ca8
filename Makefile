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

.PHONY: deb boot-test setup venv unit vm-test qemu-test test bench lint kernel-deps kernel kernel-test famfs-kernel famfs-kernel-test famfs-v1-kernel famfs-v1-kernel-test famfs-build famfs-smoke ndctl-test clean

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

# The packages a kernel build needs (qemu/kernel-build-deps.txt), installed when missing (root, apt).
kernel-deps:
	bash scripts/setup.sh --kernel-deps

# Build a test kernel from KSRC (+ PATCHES, KCONFIG) into .cache/kbuild; prints the --kernel/--modules
# arguments for qemu/cxl-mhd.sh (README-kernel). Not part of `make test`: a first build takes ~30 min.
kernel: kernel-deps
	bash qemu/build-kernel.sh KSRC="$(KSRC)" PATCHES="$(PATCHES)" ADAPT="$(ADAPT)" KCONFIG="$(KCONFIG)"

# Debian's linux-source-7.3 + qemu/patches, built (or reused) and booted on HOSTS guests sharing CXL memory.
kernel-test: setup kernel-deps
	bash qemu/kernel-test.sh HOSTS="$(HOSTS)" $(if $(KSRC),KSRC="$(KSRC)") $(if $(PATCHES),PATCHES="$(PATCHES)") \
	  $(if $(KCONFIG),KCONFIG="$(KCONFIG)")

# The famfs fuse series V10 (not in this repository: docs/kernel.md says how to get it) on Debian's
# linux-source-7.3 with our context adaptations, qemu/patches/famfs-7.3. PATCHES defaults to
# .cache/famfs-v10/famfs-v10.mbox; KSRC to the Debian source kernel-test.sh fetches.
FAMFS_PATCHES ?= $(CACHE)/famfs-v10/famfs-v10.mbox
famfs-kernel: kernel-deps
	bash qemu/kernel-test.sh --build-only FAMFS=1 $(if $(KSRC),KSRC="$(KSRC)") \
	  PATCHES="$(or $(PATCHES),$(FAMFS_PATCHES))" $(if $(KCONFIG),KCONFIG="$(KCONFIG)")

# That kernel booted on HOSTS guests sharing one CXL device: kernel-level famfs checks, then the
# famfs mount tests of the VM suite with the famfs kernel (dax data path; docs/kernel.md).
famfs-kernel-test: setup kernel-deps
	bash qemu/kernel-test.sh FAMFS=1 HOSTS="$(HOSTS)" $(if $(VM_LOCK),VM_LOCK="$(VM_LOCK)") $(if $(KSRC),KSRC="$(KSRC)") \
	  $(if $(SKIPS),SKIPS="$(SKIPS)") \
	  PATCHES="$(or $(PATCHES),$(FAMFS_PATCHES))" $(if $(KCONFIG),KCONFIG="$(KCONFIG)")

# famfs's own user space, built offline from a checkout you fetched (docs/famfs-tools.md says how;
# nothing of famfs is kept here), then famfs's smoke scripts run unmodified in one nvdimm guest.
# SERVER=daxmode routes `famfs mount` to daxmode's server; SERVER=famfs uses famfs_fused.
FAMFS_BUILD ?= $(CACHE)/famfs-build
SERVER ?= daxmode
famfs-build:
	@test -n "$(FAMFS_SRC)" || { echo "daxmode: FAMFS_SRC=<famfs checkout> is required (docs/famfs-tools.md)" >&2; exit 2; }
	bash scripts/famfs-build.sh "$(FAMFS_SRC)" "$(FAMFS_BUILD)"

famfs-smoke: setup famfs-build
	bash qemu/cxl-mhd.sh --backend nvdimm --hosts 1 --shared-size 6G --mem 2G --timeout 3600 \
	  --results results/famfs-smoke-$(SERVER) $(if $(KERNEL),--kernel $(KERNEL)) $(if $(MODULES),--modules $(MODULES)) \
	  --cmd "cd $(CURDIR) && bash scripts/famfs-smoke.sh $(abspath $(FAMFS_SRC)) $(abspath $(FAMFS_BUILD)) $(SERVER)"

# A Debian package from this checkout (debian/, debhelper + dh-python), lintian-checked:
# daxmode_<version>_<arch>.deb here; `apt install ./daxmode_*.deb` installs it.
deb:
	bash scripts/deb.sh

# The boot path under systemd: a Debian guest with the package installed boots with a configuration
# (system-ram + famfs mounted at boot), is checked, rebooted, checked, shut down (docs/boot-test.md).
boot-test: setup
	$(if $(VM_LOCK),VM_LOCK="$(VM_LOCK)") bash qemu/boot-test.sh

# The standalone famfs kernel (famfs "v1": RFC v2 series of April 2024, dev_dax_iomap + fs/famfs; not in
# this repository, docs/kernel.md section 8 says how to get it) on Debian's linux-source-6.12 with our
# context adaptations, qemu/patches/famfs-v1-6.12, and the fragment qemu/famfs-v1.config.
FAMFS_V1_PATCHES ?= $(CACHE)/famfs-v1/famfs-v1.mbox
famfs-v1-kernel: kernel-deps
	bash qemu/kernel-test.sh --build-only FAMFS=v1 $(if $(KSRC),KSRC="$(KSRC)") \
	  PATCHES="$(or $(PATCHES),$(FAMFS_V1_PATCHES))" $(if $(KCONFIG),KCONFIG="$(KCONFIG)")

# That kernel on HOSTS guests sharing one CXL device: module, /proc/filesystems and ioctl checks, then
# the VM suite (famfs mounts take the famfs-v1 data path; skips judged by qemu/skips/famfs-v1.toml, or SKIPS).
famfs-v1-kernel-test: setup kernel-deps
	bash qemu/kernel-test.sh FAMFS=v1 HOSTS="$(HOSTS)" $(if $(VM_LOCK),VM_LOCK="$(VM_LOCK)") $(if $(KSRC),KSRC="$(KSRC)") \
	  $(if $(SKIPS),SKIPS="$(SKIPS)") \
	  PATCHES="$(or $(PATCHES),$(FAMFS_V1_PATCHES))" $(if $(KCONFIG),KCONFIG="$(KCONFIG)")

# ndctl 85's own dax and cxl test suites (meson test) on a kernel built with its own nfit_test and
# cxl_test modules: Debian's linux-source-7.3 (default), FAMFS=v10 / FAMFS=v1 (KSRC=<v1 tree>),
# KERNEL=<build-kernel.sh dir> or KERNEL=debian (the packaged kernel: only tests needing no
# unit-test module). A skip not declared in qemu/ndctl-skips/<kernel>.skips fails (README-kernel).
ndctl-test: setup
	bash qemu/ndctl-test.sh $(if $(FAMFS),FAMFS="$(FAMFS)") $(if $(KERNEL),KERNEL="$(KERNEL)") \
	  $(if $(MODULES),MODULES="$(MODULES)") $(if $(KSRC),KSRC="$(KSRC)") $(if $(TESTS),TESTS="$(TESTS)") \
	  $(if $(NDCTL_SRC),NDCTL_SRC="$(NDCTL_SRC)") $(if $(VM_LOCK),VM_LOCK="$(VM_LOCK)")

clean:
	rm -rf results build *.egg-info
