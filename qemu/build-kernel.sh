#!/usr/bin/env bash
# Build a test kernel for the QEMU harness from a kernel tree plus optional patches.
#
#   make kernel KSRC=<kernel tree> [PATCHES=<dir or file of .patch/.diff/.mbox/.mbx>] [KCONFIG=<fragment>]
#               [ADAPT=<dir or file of .adapt>]
#   bash qemu/build-kernel.sh KSRC=... [PATCHES=...] [ADAPT=...] [KCONFIG=...] [CACHE=dir] [JOBS=n]
#                             [NICE=n] [MIN_FREE_GB=n] [INSTALL_DEPS=1] [STOP_AFTER=patch|config]
#                             [TEST_MODULES="tools/testing/nvdimm tools/testing/cxl"]
#
# Patches are applied in order with `git apply` (strict: no fuzz). Mailboxes (.mbox/.mbx, e.g.
# from `b4 am` or a list archive) are split with `git mailsplit`; `git mailinfo --quoted-cr=strip`
# decodes each message, so quoted-printable mails with CRLF line ends apply cleanly. ADAPT names
# context adaptations (qemu/patch_adapt.py): hunks of a posted series re-seated on a newer tree
# by replacing their context lines only, spliced into the series' patches before each is applied
# (qemu/patches/famfs-7.3 does that for the famfs fuse series V10 on Linux 7.3). Every
# adaptation record must match a hunk of the series, or the build stops. *.patch files in ADAPT
# are our own follow-up fixes, applied after all of PATCHES in name order.
#
# TEST_MODULES (argument or environment) names directories of the tree to build as external
# modules against this very build (the unit-test modules nfit_test and cxl_test need the kernel's
# own objects and --wrap, so they can only come from the same source and .config); they are
# installed under lib/modules/<release>/updates, where depmod prefers them to the in-tree modules
# they replace (qemu/ndctl-test.sh). Part of the cache key.
#
# STOP_AFTER keeps the scratch tree (patched sources, or sources + out/.config) and prints its
# path instead of building; handy to inspect a config, and what the script's own tests use.
#
# The user's tree is never written to: the build works on a hard-linked copy (patch tools replace
# files rather than edit them in place, so the links break where a patch applies) and compiles
# out of tree (O=). Config: `make defconfig` + `make kvm_guest.config` (both in every tree, no
# extra tool), merged with qemu/famfs.config and KCONFIG (scripts/kconfig/merge_config.sh), then
# `make olddefconfig`; requested options that did not survive are printed (kconfig_report.py).
# Products (bzImage, modules under lib/modules/<release>, config, System.map, build-info) go to
# $CACHE/kbuild/<version>-<hash of source, patches, final .config>/, renamed into place only when
# everything succeeded; a second run with the same inputs reuses it (see "cache keys" below).
#
# stdout carries exactly one line, the arguments for the harness:
#   --kernel <dir>/bzImage --modules <dir>
# (with STOP_AFTER, the path of the kept scratch directory instead). Everything else goes to
# stderr; the full make output to $CACHE/kbuild/logs/input-<input key>.log.
#
# Exit codes: 0 ok; 2 usage; 20 KSRC is not a kernel tree; 21 a patch does not apply;
# 22 build dependencies missing; 23 not enough free disk space (or the disk filled up);
# 24 configuration failed; 25 compile or modules_install failed.
set -euo pipefail
# The whole script is one compound command, so bash parses it completely before running it and
# an edit to this file during a long build cannot derail the running instance.
{

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$ROOT/qemu"
FRAGMENT="$HERE/famfs.config"
DEPS_FILE="$HERE/kernel-build-deps.txt"
# Bump when the way a build is made changes, so old cache entries are not reused.
RECIPE="daxmode-kbuild-1 defconfig+kvm_guest.config+famfs.config"

KSRC="" PATCHES="" ADAPT="" KCONFIG="" CACHE="" JOBS="" NICE="10" MIN_FREE_GB="15" INSTALL_DEPS="" STOP_AFTER=""
TEST_MODULES="${TEST_MODULES:-}"

say() { printf 'build-kernel: %s\n' "$*" >&2; }
fail() { # fail <code> <message>
    printf 'build-kernel: error: %s\n' "$2" >&2
    exit "$1"
}

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
    exit "${1:-2}"
}

for arg in "$@"; do
    case "$arg" in
    -h | --help) usage 0 ;;
    KSRC=* | PATCHES=* | ADAPT=* | KCONFIG=* | CACHE=* | JOBS=* | NICE=* | MIN_FREE_GB=* | INSTALL_DEPS=* | STOP_AFTER=* | TEST_MODULES=*)
        printf -v "${arg%%=*}" '%s' "${arg#*=}"
        ;;
    *) fail 2 "unknown argument '$arg' (expected KEY=VALUE: KSRC, PATCHES, ADAPT, KCONFIG, CACHE, JOBS, NICE, MIN_FREE_GB, INSTALL_DEPS, STOP_AFTER; see --help)" ;;
    esac
done

[[ -n "$KSRC" ]] || fail 2 "KSRC is required: make kernel KSRC=<kernel source tree> [PATCHES=<dir>] [KCONFIG=<fragment>]"
[[ -z "$STOP_AFTER" || "$STOP_AFTER" == patch || "$STOP_AFTER" == config ]] ||
    fail 2 "STOP_AFTER must be 'patch' or 'config', not '$STOP_AFTER'"
[[ "$MIN_FREE_GB" =~ ^[0-9]+$ ]] || fail 2 "MIN_FREE_GB must be a whole number of GB, not '$MIN_FREE_GB'"
[[ "$NICE" =~ ^-?[0-9]+$ ]] || fail 2 "NICE must be an integer, not '$NICE'"
JOBS="${JOBS:-$(nproc)}"
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || fail 2 "JOBS must be a positive integer, not '$JOBS'"
CACHE="${CACHE:-$ROOT/.cache}"
# Canonical, so the printed paths work from other checkouts sharing the cache (.cache is often a symlink).
CACHE="$(mkdir -p "$CACHE" && cd "$CACHE" && pwd -P)" || fail 23 "cannot create the cache directory $CACHE"
KB="$CACHE/kbuild"

# --- inputs -------------------------------------------------------------------------------------
[[ -d "$KSRC" ]] || fail 20 "KSRC=$KSRC is not a directory"
KSRC="$(cd "$KSRC" && pwd -P)"
mk_var() { sed -n "s/^$1 *= *//p" "$KSRC/Makefile" | head -n1; }
if [[ ! -f "$KSRC/Makefile" || ! -f "$KSRC/Kconfig" || ! -d "$KSRC/arch/x86" ]] ||
    [[ -z "$(mk_var VERSION)" || -z "$(mk_var PATCHLEVEL)" ]]; then
    fail 20 "KSRC=$KSRC is not a Linux kernel tree (needs a top-level Makefile with VERSION/PATCHLEVEL, Kconfig and arch/x86)"
fi
KVERSION="$(mk_var VERSION).$(mk_var PATCHLEVEL).$(mk_var SUBLEVEL)$(mk_var EXTRAVERSION)"
for m in $TEST_MODULES; do
    [[ "$m" != /* && "$m" != *..* && -f "$KSRC/$m/Kbuild" ]] ||
        fail 2 "TEST_MODULES entry '$m' is not a directory with a Kbuild file inside KSRC"
done
[[ -z "$TEST_MODULES" ]] || RECIPE="$RECIPE test-modules:$(echo $TEST_MODULES)"

PATCH_FILES=()
if [[ -n "$PATCHES" ]]; then
    [[ -e "$PATCHES" ]] || fail 21 "PATCHES=$PATCHES does not exist"
    PATCHES="$(cd "$(dirname "$PATCHES")" && pwd -P)/$(basename "$PATCHES")"
    if [[ -d "$PATCHES" ]]; then
        while IFS= read -r -d '' f; do PATCH_FILES+=("$f"); done < <(
            find "$PATCHES" -maxdepth 1 -type f \( -name '*.patch' -o -name '*.diff' -o -name '*.mbox' -o -name '*.mbx' \) \
                -print0 | LC_ALL=C sort -z
        )
        ((${#PATCH_FILES[@]})) || fail 21 "PATCHES=$PATCHES holds no *.patch, *.diff, *.mbox or *.mbx files"
    elif [[ -f "$PATCHES" ]]; then
        PATCH_FILES=("$PATCHES")
    else
        fail 21 "PATCHES=$PATCHES does not exist"
    fi
fi
ADAPT_FILES=() FOLLOWUP_FILES=()
if [[ -n "$ADAPT" ]]; then
    [[ -n "$PATCHES" ]] || fail 2 "ADAPT=$ADAPT adapts patches, but no PATCHES= was given"
    [[ -e "$ADAPT" ]] || fail 21 "ADAPT=$ADAPT does not exist"
    ADAPT="$(cd "$(dirname "$ADAPT")" && pwd -P)/$(basename "$ADAPT")"
    if [[ -d "$ADAPT" ]]; then
        while IFS= read -r -d '' f; do ADAPT_FILES+=("$f"); done < <(
            find "$ADAPT" -maxdepth 1 -type f -name '*.adapt' -print0 | LC_ALL=C sort -z
        )
        while IFS= read -r -d '' f; do FOLLOWUP_FILES+=("$f"); done < <(
            find "$ADAPT" -maxdepth 1 -type f -name '*.patch' -print0 | LC_ALL=C sort -z
        )
        ((${#ADAPT_FILES[@]} + ${#FOLLOWUP_FILES[@]})) || fail 21 "ADAPT=$ADAPT holds no *.adapt or *.patch files"
    elif [[ "$ADAPT" == *.patch ]]; then
        FOLLOWUP_FILES=("$ADAPT")
    else
        ADAPT_FILES=("$ADAPT")
    fi
fi
FRAGMENTS=("$FRAGMENT")
if [[ -n "$KCONFIG" ]]; then
    [[ -f "$KCONFIG" ]] || fail 2 "KCONFIG=$KCONFIG is not a file"
    FRAGMENTS+=("$(cd "$(dirname "$KCONFIG")" && pwd -P)/$(basename "$KCONFIG")")
fi

# --- build dependencies ---------------------------------------------------------------------------
# STOP_AFTER=patch compiles nothing, so only git is needed for it.
missing=()
deps="$(cat "$DEPS_FILE")"
[[ "$STOP_AFTER" == patch ]] && deps="git git"
while read -r pkg probe _; do
    [[ -z "$pkg" || "$pkg" == \#* ]] && continue
    if [[ "$probe" == /* ]]; then [[ -e "$probe" ]] || missing+=("$pkg"); else command -v "$probe" >/dev/null || missing+=("$pkg"); fi
done <<<"$deps"
if ((${#missing[@]})); then
    if [[ "$INSTALL_DEPS" == 1 && $(id -u) -eq 0 ]]; then
        say "installing missing build dependencies: ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
            fail 22 "apt-get install ${missing[*]} failed"
    else
        fail 22 "missing kernel build dependencies; run: apt-get install -y ${missing[*]}   (or pass INSTALL_DEPS=1 as root)"
    fi
fi

# --- cache keys -------------------------------------------------------------------------------------
# Two keys. The input key (source, patches, fragment texts) finds a finished build without any
# work. A build itself is stored under the config key (source, patches, the final .config), so a
# fragment edit that changes nothing in the result (a comment, an option Kconfig forces anyway)
# costs one configure run (~1 min), not a rebuild; by-input/<input key> links to the build.
# The source is identified by its file list with sizes and mtimes (not contents: hashing ~1.5 GB
# would cost more than it saves); .git and build outputs of an in-tree build are left out.
src_id() {
    (cd "$KSRC" && find . \( -name .git -o -name '*.o' -o -name '*.cmd' -o -name '*.ko' \) -prune -o -type f \
        -printf '%P\t%s\t%T@\n' | LC_ALL=C sort | sha256sum | cut -c1-64)
}
INPUT_KEY="$(
    {
        echo "$RECIPE"
        echo "$KVERSION $(src_id)"
        for p in ${PATCH_FILES[@]+"${PATCH_FILES[@]}"}; do echo "patch $(basename "$p") $(sha256sum <"$p")"; done
        ((${#ADAPT_FILES[@]})) && echo "adapter $(sha256sum <"$HERE/patch_adapt.py")"
        for a in ${ADAPT_FILES[@]+"${ADAPT_FILES[@]}"} ${FOLLOWUP_FILES[@]+"${FOLLOWUP_FILES[@]}"}; do
            echo "adapt $(basename "$a") $(sha256sum <"$a")"
        done
        for f in "${FRAGMENTS[@]}"; do echo "fragment $(sha256sum <"$f")"; done
    } | sha256sum | cut -c1-12
)"
BY_INPUT="$KB/by-input/$INPUT_KEY"
DEST=""
print_result() { printf -- '--kernel %s/bzImage --modules %s\n' "$DEST" "$DEST"; }

if [[ -z "$STOP_AFTER" && -f "$BY_INPUT/build-info" ]]; then
    DEST="$(readlink -f "$BY_INPUT")"
    say "cached build $DEST (same source, patches and fragments)"
    print_result
    exit 0
fi

# --- disk space ---------------------------------------------------------------------------------------
mkdir -p "$KB/logs" "$KB/by-input" "$KB/locks"
free_gb() { df -Pk "$KB" | awk 'NR==2 {print int($4 / 1048576)}'; }
if (($(free_gb) < MIN_FREE_GB)); then
    fail 23 "only $(free_gb) GB free on the file system of $KB; a kernel build needs about $MIN_FREE_GB GB (set MIN_FREE_GB= to override)"
fi

# One build per key at a time; a second caller waits and then finds the finished build.
exec 9>"$KB/locks/input-$INPUT_KEY"
flock 9
if [[ -z "$STOP_AFTER" && -f "$BY_INPUT/build-info" ]]; then
    DEST="$(readlink -f "$BY_INPUT")"
    say "cached build $DEST (finished by a concurrent run)"
    print_result
    exit 0
fi

SCRATCH="$(mktemp -d "$KB/.tmp-$KVERSION-$INPUT_KEY.XXXXXX")"
keep_scratch=0
cleanup() {
    local rc=$?
    if [[ $keep_scratch == 0 ]]; then rm -rf "$SCRATCH"; fi

    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
SRC="$SCRATCH/src" OUT="$SCRATCH/out" STAGE="$SCRATCH/stage"
LOG="$KB/logs/input-$INPUT_KEY.log"
: >"$LOG"
# Keep git (setlocalversion, git apply) from finding a repository that merely encloses the scratch dir.
export GIT_CEILING_DIRECTORIES="$SCRATCH"

run_logged() { # run_logged <what> <exit code> cmd...: output to the log, tail of it on failure
    local what="$1" code="$2"
    shift 2
    if ! "$@" >>"$LOG" 2>&1; then
        tail -n 25 "$LOG" | sed 's/^/  | /' >&2
        if (($(free_gb) < 1)); then fail 23 "$what failed: the disk holding $KB is full (full log: $LOG)"; fi
        fail "$code" "$what failed (full log: $LOG)"
    fi
}

# --- scratch copy ----------------------------------------------------------------------------------------
T0=$(date +%s)
mkdir "$SRC"
say "copying $KSRC to a scratch tree (hard links) in $SCRATCH"
shopt -s dotglob nullglob
entries=()
for e in "$KSRC"/*; do [[ "$(basename "$e")" == .git ]] || entries+=("$e"); done
shopt -u dotglob nullglob
if ! cp -al "${entries[@]}" "$SRC/" 2>>"$LOG"; then
    say "hard links not possible (different file systems?); copying instead"
    rm -rf "$SRC" && mkdir "$SRC"
    run_logged "copying $KSRC" 23 cp -a "${entries[@]}" "$SRC/"
fi
if [[ -e "$SRC/.config" || -d "$SRC/include/config" ]]; then
    # An in-tree build would make O= refuse; mrproper only unlinks, so the user's files stay.
    say "KSRC has in-tree build products; cleaning them in the scratch copy (make mrproper)"
    run_logged "make mrproper" 24 make -C "$SRC" mrproper
fi

# --- patches ------------------------------------------------------------------------------------------------
apply_one() { # apply_one <diff file> <label> <subject>
    local diff="$1" label="$2" subject="$3" err
    if ((${#ADAPT_FILES[@]})) && [[ -n "$subject" ]]; then
        python3 "$HERE/patch_adapt.py" apply --subject "$subject" --used-log "$SCRATCH/adapt-used" \
            "$diff" "${ADAPT_FILES[@]}" >"$diff.adapted" 2>"$SCRATCH/adapt.err" ||
            fail 21 "adapting $label failed: $(tail -n1 "$SCRATCH/adapt.err")"
        sed 's/^/  /' "$SCRATCH/adapt.err" >&2
        diff="$diff.adapted"
    fi
    if ! git -C "$SRC" apply --numstat "$diff" 2>/dev/null | grep -q .; then
        fail 21 "$label contains no diff"
    fi
    APPLIED_SUMS+=("$(sha256sum <"$diff" | cut -c1-64)")
    if ! err="$(git -C "$SRC" apply --whitespace=nowarn "$diff" 2>&1)"; then
        err="$(printf '%s\n' "$err" | head -n2 | paste -sd' ')"
        fail 21 "$label does not apply to $KSRC: $err (a series posted for another kernel may need ADAPT=; see docs/kernel.md)"
    fi
}
n_applied=0 APPLIED_SUMS=()
for p in ${PATCH_FILES[@]+"${PATCH_FILES[@]}"}; do
    case "$p" in
    *.mbox | *.mbx)
        split="$SCRATCH/mbox" && rm -rf "$split" && mkdir -p "$split"
        count="$(git mailsplit -o"$split" "$p")" || fail 21 "cannot split mailbox $p"
        ((count > 0)) || fail 21 "mailbox $p holds no messages"
        for msg in "$split"/*; do
            subject="$(git mailinfo --quoted-cr=strip "$msg.msg" "$msg.diff" <"$msg" | sed -n 's/^Subject: //p')"
            [[ -s "$msg.diff" ]] || {
                say "skipping message without a diff in $(basename "$p"): $subject"
                continue
            }
            apply_one "$msg.diff" "patch '$subject' (message $(basename "$msg") of $p)" "$subject"
            n_applied=$((n_applied + 1))
        done
        ;;
    *)
        subject="$(git mailinfo --quoted-cr=strip /dev/null /dev/null <"$p" 2>/dev/null | sed -n 's/^Subject: //p')" || subject=""
        cp "$p" "$SCRATCH/one.diff"
        apply_one "$SCRATCH/one.diff" "patch $p" "${subject:-$(basename "$p")}"
        n_applied=$((n_applied + 1))
        ;;
    esac
done
((${#PATCH_FILES[@]})) && say "applied $n_applied patch(es) from $PATCHES"
if ((${#ADAPT_FILES[@]})); then
    python3 "$HERE/patch_adapt.py" unused --used-log "$SCRATCH/adapt-used" "${ADAPT_FILES[@]}" 2>"$SCRATCH/adapt.err" ||
        fail 21 "$(sed 's/^/  /' "$SCRATCH/adapt.err")
adaptations in $ADAPT that matched no hunk of $PATCHES: is it the series they were written for?"
    say "adapted hunks: $(wc -l <"$SCRATCH/adapt-used") from ${#ADAPT_FILES[@]} file(s) in $ADAPT"
fi
for f in ${FOLLOWUP_FILES[@]+"${FOLLOWUP_FILES[@]}"}; do
    cp "$f" "$SCRATCH/one.diff"
    apply_one "$SCRATCH/one.diff" "follow-up patch $f" ""
    say "applied follow-up $(basename "$f")"
done
if [[ "$STOP_AFTER" == patch ]]; then
    keep_scratch=1
    say "stopping after the patches as asked; scratch tree kept"
    echo "$SCRATCH"
    exit 0
fi

# --- configuration --------------------------------------------------------------------------------------------
say "configuring: defconfig + kvm_guest.config + ${FRAGMENTS[*]}"
run_logged "make defconfig" 24 make -C "$SRC" O="$OUT" defconfig
run_logged "make kvm_guest.config" 24 make -C "$SRC" O="$OUT" kvm_guest.config
run_logged "merging config fragments" 24 env -C "$OUT" "$SRC/scripts/kconfig/merge_config.sh" -m -O "$OUT" \
    "$OUT/.config" "${FRAGMENTS[@]}"
run_logged "make olddefconfig" 24 make -C "$SRC" O="$OUT" olddefconfig
mkdir -p "$STAGE"
python3 "$HERE/kconfig_report.py" --tree "$SRC" --config "$OUT/.config" "${FRAGMENTS[@]}" >"$STAGE/config-report.txt" ||
    fail 24 "checking the final config failed"
if [[ -s "$STAGE/config-report.txt" ]]; then
    say "requested options that did not end up as requested:"
    sed 's/^/  /' "$STAGE/config-report.txt" >&2
else
    say "every requested option is set as requested"
fi
CONFIG_KEY="$(
    {
        echo "$RECIPE"
        echo "$KVERSION $(src_id)"
        # What was applied (after adaptation), not how it was obtained: an edit to the adapter
        # or an mbox re-encoded by another mailer that applies the same diffs reuses the build.
        for d in ${APPLIED_SUMS[@]+"${APPLIED_SUMS[@]}"}; do echo "applied $d"; done
        cat "$OUT/.config"
    } | sha256sum | cut -c1-12
)"
NAME="$KVERSION-$CONFIG_KEY"
say "build key $NAME (source, applied diffs, final .config)"
if [[ "$STOP_AFTER" == config ]]; then
    cp "$OUT/.config" "$STAGE/config"
    keep_scratch=1
    say "stopping after the configuration as asked; scratch dir kept (config in stage/config)"
    echo "$SCRATCH"
    exit 0
fi
DEST="$KB/$NAME"
exec 8>"$KB/locks/$NAME"
flock 8
if [[ -f "$DEST/build-info" ]]; then
    ln -sfn "../$NAME" "$BY_INPUT"
    # The report belongs to the fragments just checked, not to the ones of the first build.
    cp "$STAGE/config-report.txt" "$DEST/.config-report.new" && mv "$DEST/.config-report.new" "$DEST/config-report.txt"
    say "cached build $DEST (same source, applied diffs and final .config)"
    print_result
    exit 0
fi

# --- build ---------------------------------------------------------------------------------------------------------
# CPU seconds (user + system) of this script's finished children: the `times` builtin, run in
# this shell (in a subshell or pipeline it would report the subshell's own, empty, children).
cpu_of() { awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } printf "%d", t }' "$1"; }
times >"$SCRATCH/times-1"
T1=$(date +%s)
say "building bzImage and modules with $JOBS jobs (nice $NICE); log: $LOG"
run_logged "the kernel build" 25 nice -n "$NICE" make -C "$SRC" O="$OUT" -j"$JOBS" bzImage modules
T2=$(date +%s)
times >"$SCRATCH/times-2"
C1=$(cpu_of "$SCRATCH/times-1") C2=$(cpu_of "$SCRATCH/times-2")
RELEASE="$(make -s -C "$SRC" O="$OUT" kernelrelease 2>>"$LOG")"
run_logged "make modules_install" 25 make -C "$SRC" O="$OUT" modules_install INSTALL_MOD_PATH="$STAGE" INSTALL_MOD_STRIP=1
for m in $TEST_MODULES; do
    say "building the external modules in $m against this build"
    run_logged "building $m" 25 nice -n "$NICE" make -C "$SRC" O="$OUT" M="$SRC/$m" -j"$JOBS" modules
    run_logged "installing $m" 25 make -C "$SRC" O="$OUT" M="$SRC/$m" modules_install \
        INSTALL_MOD_PATH="$STAGE" INSTALL_MOD_DIR=updates INSTALL_MOD_STRIP=1
done
[[ -z "$TEST_MODULES" ]] || run_logged "depmod" 25 depmod -b "$STAGE" "$RELEASE"
# The build/source links point into the scratch tree, which is about to go.
rm -f "$STAGE/lib/modules/$RELEASE/build" "$STAGE/lib/modules/$RELEASE/source"
cp "$OUT/arch/x86/boot/bzImage" "$STAGE/bzImage"
cp "$OUT/.config" "$STAGE/config"
cp "$OUT/System.map" "$STAGE/System.map"
T3=$(date +%s)
{
    echo "release=$RELEASE"
    echo "ksrc=$KSRC"
    echo "kernel_version=$KVERSION"
    echo "patches=$(for p in ${PATCH_FILES[@]+"${PATCH_FILES[@]}"}; do printf '%s ' "$(basename "$p")"; done)"
    echo "adapt=$(for a in ${ADAPT_FILES[@]+"${ADAPT_FILES[@]}"} ${FOLLOWUP_FILES[@]+"${FOLLOWUP_FILES[@]}"}; do printf '%s ' "$(basename "$a")"; done)"
    echo "fragments=${FRAGMENTS[*]}"
    echo "test_modules=$(echo $TEST_MODULES)"
    echo "jobs=$JOBS"
    echo "compile_seconds=$((T2 - T1))"
    echo "compile_cpu_seconds=$((C2 - C1))"
    echo "total_seconds=$((T3 - T0))"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$STAGE/build-info"
rm -rf "$DEST" # a stale, incomplete entry (no build-info) from an older script
mv "$STAGE" "$DEST"
ln -sfn "../$NAME" "$BY_INPUT"
say "built $RELEASE in $((T2 - T1)) s compile ($((C2 - C1)) CPU s), $((T3 - T0)) s total: $DEST"
print_result
exit 0
}
