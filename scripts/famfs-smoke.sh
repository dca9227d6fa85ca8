#!/usr/bin/env bash
# Run famfs's own smoke scripts, unmodified, in a guest: `make famfs-smoke` runs this in the VM.
#
#   scripts/famfs-smoke.sh FAMFS_SRC FAMFS_BUILD SERVER [DEV] [MPT]
#
# FAMFS_SRC: the user's famfs checkout (its smoke/ and scripts/ are copied to a scratch directory,
# since the scripts write next to themselves); FAMFS_BUILD: scripts/famfs-build.sh's output;
# SERVER: which server `famfs mount` starts:
#   famfs   - famfs's own CLI and famfs_fused, untouched;
#   daxmode - the switch: `famfs mount [opts] DEV MPT` runs `daxmode famfs mount DEV MPT` (famfs's
#             mount options are accepted and ignored: daxmode picks the data path), every other
#             famfs command is famfs's own.  Unmounting stays plain umount(8), which ends daxmode's
#             server as it ends famfs_fused.
# The scripts run as root through a pass-through `sudo` first on PATH (famfs's smoke tests want
# passwordless sudo), in famfs's run_smoke.sh order, in fuse mode.  Each prints PASS/FAIL with the
# line famfs's harness failed on; the last lines are the table.  Exit status: scripts failed.
set -uo pipefail

src=${1:?usage: famfs-smoke.sh FAMFS_SRC FAMFS_BUILD SERVER [DEV] [MPT]}
build=${2:?build dir}
server=${3:?daxmode or famfs}
dev=${4:-/dev/dax0.0}
mpt=${5:-/mnt/famfs}
here=$(cd "$(dirname "$0")/.." && pwd)
daxmode=${DAXMODE:-$here/.venv/bin/daxmode}
[[ $server == daxmode || $server == famfs ]] || { echo "daxmode: famfs-smoke: SERVER must be daxmode or famfs" >&2; exit 2; }
for b in famfs mkfs.famfs famfs_fused pcq; do
	[[ -x $build/$b ]] || { echo "daxmode: famfs-smoke: $build/$b missing (scripts/famfs-build.sh)" >&2; exit 2; }
done

work=$(mktemp -d /tmp/famfs-smoke.XXXXXX)
mkdir -p "$work/bin" "$work/path" "$work/famfs"
cp -r "$src/smoke" "$src/scripts" "$work/famfs/"
for b in mkfs.famfs famfs_fused pcq; do ln -s "$build/$b" "$work/bin/$b"; done

cat >"$work/path/sudo" <<'EOF'
#!/bin/bash
# Pass-through sudo for famfs's smoke tests (they run as root here): drops sudo's own options,
# applies leading NAME=value assignments, runs the rest.
while [[ $# -gt 0 && $1 == -* ]]; do
	case $1 in -u | -g | -C | -D) shift 2 ;; --) shift; break ;; *) shift ;; esac
done
envs=()
while [[ $# -gt 0 && $1 == [A-Za-z_]*=* ]]; do envs+=("$1"); shift; done
[[ $# -eq 0 ]] && exit 0
exec env "${envs[@]}" "$@"
EOF
chmod +x "$work/path/sudo"

if [[ $server == daxmode ]]; then
	cat >"$work/bin/famfs" <<EOF
#!/bin/bash
# famfs with \`famfs mount\` routed to daxmode's server (scripts/famfs-smoke.sh SERVER=daxmode).
real=$build/famfs
if [[ \${1:-} != mount ]]; then exec "\$real" "\$@"; fi
shift
pos=()
while [[ \$# -gt 0 ]]; do
	case \$1 in
	-h | -\\? | --help) exec "\$real" mount -h ;;
	-t | -c | -S | --timeout | --cache | --shadow) shift 2 ;;
	-*) shift ;;
	*) pos+=("\$1"); shift ;;
	esac
done
if [[ \${#pos[@]} -ne 2 ]]; then echo "famfs mount: need <daxdev> <mount point>" >&2; exit 1; fi
exec $daxmode famfs mount "\${pos[0]}" "\${pos[1]}"
EOF
	chmod +x "$work/bin/famfs"
else
	ln -s "$build/famfs" "$work/bin/famfs"
fi

# famfs's scripts switch modes with a daxctl that knows famfs mode (DAXCTL_PATH, else their own
# ndctl build); Debian bookworm's 76.1 does not. daxctl 85 from `make setup` does, run through its own
# loader (scripts/setup.sh fetch_daxctl85).
dx85=${DAXCTL85_DIR:-$here/.cache/daxctl-85}
if [[ -z ${DAXCTL_PATH:-} && -x $dx85/usr/bin/daxctl ]]; then
	lib=$dx85/usr/lib/x86_64-linux-gnu
	printf '#!/bin/sh\nexec %s --library-path %s %s "$@"\n' "$lib/ld-linux-x86-64.so.2" "$lib" "$dx85/usr/bin/daxctl" >"$work/bin/daxctl"
	chmod +x "$work/bin/daxctl"
	export DAXCTL_PATH=$work/bin/daxctl
fi
export PATH="$work/path:$PATH"
cd "$work/famfs" || exit 2
scripts=(prepare test_daxmode test_load_module test0 test_shadow_yaml test1 test2 test3 test4 stripe_test test_pcq test_fio)
declare -A verdict why
failed=0
for t in "${scripts[@]}"; do
	log=$work/$t.log
	timeout 1200 bash "smoke/$t.sh" -b "$work/bin" -s "$work/famfs/scripts" -d "$dev" -m fuse >"$log" 2>&1
	rc=$?
	if [[ $rc -eq 0 ]] && grep -q '^:== .*: skipping' "$log"; then
		verdict[$t]=SKIP # the script's own decision, with its reason
		why[$t]=$(grep -m 1 '^:== .*: skipping' "$log" | sed 's/^:== //')
	elif [[ $rc -eq 0 ]]; then
		verdict[$t]=PASS
		why[$t]=""
	else
		verdict[$t]=FAIL
		failed=$((failed + 1))
		why[$t]=$(grep -E '^:==.*(Fail|fail|ERROR)|^ERROR|^Error' "$log" | grep -v 'Fail \*\*\*' | tail -n 1)
		[[ -n ${why[$t]} ]] || why[$t]="rc $rc: $(tail -n 1 "$log")"
	fi
	echo "${verdict[$t]} $t ${why[$t]}"
	mountpoint -q "$mpt" && umount "$mpt" 2>/dev/null
done
mkdir -p "$here/results" 2>/dev/null
echo
echo "famfs smoke, server $server, kernel $(uname -r), device $dev:"
for t in "${scripts[@]}"; do printf '  %-18s %s %s\n' "$t" "${verdict[$t]}" "${why[$t]}"; done
echo "logs: $work (in the guest)"
for t in "${scripts[@]}"; do echo "----- $t (last 15 lines)"; tail -n 15 "$work/$t.log"; done
exit "$failed"
