#!/usr/bin/env bash
# famfs's own CLI against a daxmode mount: every path-based command famfs users script with.
#
#   scripts/famfs-cli-check.sh FAMFS_BIN TARGET MNT [DATA_PATH]
#
# FAMFS_BIN: a directory holding famfs's `famfs` binary (scripts/famfs-build.sh builds it);
# TARGET: an image file (made here, 8 GiB sparse, if missing) or a dax device (dax0.0) that daxmode
# may format; MNT: an empty directory.  daxmode formats TARGET (famfs's mkfs.famfs refuses image
# files, and raw devdax on kernels >= 6.15 without famfs support), mounts it with its own server
# (DATA_PATH: auto|copy|dax), and then only famfs's CLI acts on the mount.  Each check prints
# PASS or FAIL with what was compared; the exit status is the number of failures.
set -uo pipefail

bin=${1:?usage: famfs-cli-check.sh FAMFS_BIN TARGET MNT [DATA_PATH]}
target=${2:?target}
mnt=${3:?mount point}
data_path=${4:-auto}
here=$(cd "$(dirname "$0")/.." && pwd)
daxmode=${DAXMODE:-$here/.venv/bin/daxmode}
famfs=$bin/famfs
[[ -x $famfs ]] || { echo "daxmode: famfs-cli-check: no famfs binary in $bin" >&2; exit 2; }
[[ -x $daxmode ]] || daxmode=daxmode

mkdir -p "$mnt"
fails=0
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1"; fails=$((fails + 1)); }
check() { # check NAME CMD...: the command must succeed
	local name=$1; shift
	local out
	if out=$("$@" 2>&1); then pass "$name"; else fail "$name: rc $? from $*: $(tail -n 3 <<<"$out" | tr '\n' ' ')"; fi
}

work=$(mktemp -d /tmp/famfs-cli-check.XXXXXX)
cleanup() {
	"$daxmode" famfs umount "$mnt" >/dev/null 2>&1 || umount -l "$mnt" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

if [[ $target != dax* && $target != /dev/dax* && ! -e $target ]]; then
	truncate -s 8G "$target"
fi
"$daxmode" famfs mkfs --force "$target" >/dev/null || { echo "FAIL daxmode mkfs $target"; exit 1; }
"$daxmode" famfs mount --data-path "$data_path" "$target" "$mnt" || { echo "FAIL daxmode mount"; exit 1; }
grep " $mnt " /proc/mounts

mkdir -p "$work/src/sub/deeper"
head -c 5000000 /dev/urandom >"$work/src/a"
head -c 100 /dev/urandom >"$work/src/sub/b"
head -c 3000000 /dev/urandom >"$work/src/sub/deeper/c"
head -c 9000000 /dev/urandom >"$work/big"

check "fsck MNT (empty)" "$famfs" fsck "$mnt"
check "logplay MNT (empty)" "$famfs" logplay "$mnt"
check "mkdir" "$famfs" mkdir "$mnt/d1"
check "mkdir -p" "$famfs" mkdir -p "$mnt/p/q/r"
[[ -d $mnt/p/q/r ]] && pass "mkdir -p: $mnt/p/q/r is a directory" || fail "mkdir -p: no $mnt/p/q/r"
check "creat -r -S" "$famfs" creat -s 3m -r -S 7 "$mnt/d1/rand"
check "verify -S" "$famfs" verify -S 7 -f "$mnt/d1/rand"
check "creat -N -B -C" "$famfs" creat -s 20m -N 2 -B 4 -C 2m -r -S 9 "$mnt/striped"
check "verify (striped)" "$famfs" verify -S 9 -f "$mnt/striped"
check "cp" "$famfs" cp "$work/big" "$mnt/d1/big"
cmp -s "$work/big" "$mnt/d1/big" && pass "cp: bytes equal" || fail "cp: bytes differ"
check "cp -r" "$famfs" cp -r "$work/src" "$mnt/tree"
for f in a sub/b sub/deeper/c; do
	cmp -s "$work/src/$f" "$mnt/tree/$f" && pass "cp -r: tree/$f equal" || fail "cp -r: tree/$f differs"
done
check "cp several" "$famfs" cp "$work/src/a" "$work/big" "$mnt/p"
check "cp -N -B -C" "$famfs" cp -N 2 -B 4 -C 2m "$work/big" "$mnt/bigs"
cmp -s "$work/big" "$mnt/bigs" && pass "cp -N: bytes equal" || fail "cp -N: bytes differ"
umask_mode=$(umask 077 && "$famfs" creat -s 4096 -m 0666 "$mnt/um" >/dev/null 2>&1 && stat -c %a "$mnt/um")
[[ $umask_mode == 600 ]] && pass "creat -m under umask 077: mode 600" || fail "creat -m under umask 077: mode $umask_mode"
check "flush" "$famfs" flush "$mnt/d1/big" "$mnt/bigs"
out=$("$famfs" getmap "$mnt/bigs" 2>&1)
[[ $out == *"Interleaved extent has 2 strips"* ]] && pass "getmap (interleaved)" || fail "getmap: $out"
check "getmap (simple)" "$famfs" getmap "$mnt/d1/big"
check "check" "$famfs" check "$mnt"
check "chkread" "$famfs" chkread "$mnt/d1/big"
out=$("$famfs" logplay -n "$mnt" 2>&1)
[[ $out == *"0 new files; 0 new directories"* ]] && pass "logplay -n: nothing new" || fail "logplay -n: $out"
out=$("$famfs" fsck "$mnt" 2>&1)
[[ $out == *"No allocation errors found"* ]] && pass "fsck MNT: clean" || fail "fsck MNT: $out"
fa=$(awk '/Allocated bytes:/ {print $3}' <<<"$out")
da=$("$daxmode" famfs fsck --json "$target" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["stats"]["allocated_bytes"])' 2>/dev/null)
[[ -n $fa && $fa == "$da" ]] && pass "bytes allocated: famfs $fa = daxmode $da" || fail "bytes allocated: famfs $fa, daxmode $da"
"$daxmode" famfs fsck "$target" >/dev/null 2>&1 && pass "daxmode fsck: clean" || fail "daxmode fsck: problems"
nf=$("$daxmode" famfs fsck --json "$target" | python3 -c 'import json,sys; print(json.load(sys.stdin)["stats"]["files"])')
[[ $nf == 10 ]] && pass "daxmode sees the 10 files famfs made" || fail "daxmode sees $nf files, famfs made 10"
sock="$(python3 -c 'import os,sys; print(os.getxattr(sys.argv[1], "user.famfs.shadow").decode())' "$mnt")/sock"
out=$(curl -s --unix-socket "$sock" http://localhost/icache_stats 2>&1)
[[ $out == *search_count* ]] && pass "REST GET /icache_stats" || fail "REST: $out"
"$daxmode" famfs umount "$mnt" >/dev/null && pass "umount" || fail "umount"
"$daxmode" famfs mount --data-path "$data_path" "$target" "$mnt" >/dev/null || fail "remount"
cmp -s "$work/big" "$mnt/d1/big" && pass "after remount: bytes equal" || fail "after remount: bytes differ"
check "verify after remount" "$famfs" verify -S 9 -f "$mnt/striped"

echo "famfs-cli-check: $fails failure(s) ($(uname -r), data path $data_path, target $target)"
exit "$fails"
