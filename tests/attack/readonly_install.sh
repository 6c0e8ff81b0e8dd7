#!/usr/bin/env bash
# Issue 16 case 1, for real: refnet installed (not editable) into a venv whose site-packages
# is read-only, run by a non-root user with no writable HOME, from a folder it cannot write.
# `refnet run --zoo lenet-mnist` must work (numba's cache falls back to a private temp folder,
# saying so in one line) and so must a NUMBA_CACHE_DIR that points at a file. (LeNet's forward
# pass needs no numba -- refnet.runtime.smallnet -- so the cache cases force numba with
# REFNET_NUMPY_MAX_MACS=0; case 0 checks the default run does without it.)
# Needs root (useradd, setpriv). Usage: tests/attack/readonly_install.sh [PYTHON]   (make attack-readonly)
set -euo pipefail
PY=${1:-/usr/bin/python3}  # not a pyenv python under /root: the test user must be able to run it
SRC=$(cd "$(dirname "$0")/../.." && pwd)
MODELS=${REFNET_MODELS:-$SRC/../shared/models}
[ "$(id -u)" = 0 ] || { echo "needs root (useradd/setpriv)"; exit 2; }
[ -d "$MODELS/lenet_mnist_caffe" ] || { echo "no LeNet under $MODELS"; exit 2; }
T=$(mktemp -d /tmp/refnet-ro.XXXXXX)
U=refnetro$$
cleanup() { userdel "$U" 2>/dev/null || true; rm -rf "$T" "/tmp/refnet-numba-$UID_RO" 2>/dev/null || true; }
trap cleanup EXIT
chmod 755 "$T"
"$PY" -m venv "$T/venv"
"$T/venv/bin/pip" install -q "$SRC" 2>&1 | grep -v "^$" | tail -2 || true
SITE=$("$T/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
chmod -R a-w "$SITE"
useradd -M -d /nonexistent -s /usr/sbin/nologin "$U"
UID_RO=$(id -u "$U")
mkdir "$T/out" "$T/ro-cwd" && chown "$U" "$T/out" && chmod 555 "$T/ro-cwd"
IMG="$T/out/digit.png"
"$T/venv/bin/python" -c "import numpy as np, cv2; cv2.imwrite('$IMG', np.full((28, 28), 200, np.uint8))"
as_user() {
  (cd "$T/ro-cwd" && setpriv --reuid "$U" --regid "$U" --clear-groups \
    env -i HOME=/nonexistent PATH=/usr/bin:/bin REFNET_MODELS="$MODELS" "$@")
}
echo "== 0. read-only site-packages, no HOME, unwritable cwd: refnet run --zoo lenet-mnist, no numba"
as_user "$T/venv/bin/refnet" run --zoo lenet-mnist --image "$IMG" -o "$T/out/run0.png" 2> "$T/err0"
cat "$T/err0"
! grep -q "numba\|compiling" "$T/err0"
[ -s "$T/out/run0.png" ]
echo "== 1. the same with numba's kernels: the cache falls back to a private folder"
as_user env REFNET_NUMPY_MAX_MACS=0 "$T/venv/bin/refnet" run --zoo lenet-mnist --image "$IMG" \
  -o "$T/out/run1.png" 2> "$T/err1"
cat "$T/err1"
grep -q "numba cache: .*using the private folder /tmp/refnet-numba-$UID_RO" "$T/err1"
[ "$(stat -c %a "/tmp/refnet-numba-$UID_RO")" = 700 ]
echo "== 2. second run: cached, no compile notice"
as_user env REFNET_NUMPY_MAX_MACS=0 "$T/venv/bin/refnet" run --zoo lenet-mnist --image "$IMG" \
  -o "$T/out/run2.png" 2> "$T/err2"
! grep -q "compiling kernels" "$T/err2"
echo "== 3. NUMBA_CACHE_DIR pointing at a file"
touch "$T/out/afile" && chown "$U" "$T/out/afile"
as_user env REFNET_NUMPY_MAX_MACS=0 NUMBA_CACHE_DIR="$T/out/afile" "$T/venv/bin/refnet" run --zoo lenet-mnist --image "$IMG" \
  -o "$T/out/run3.png" 2> "$T/err3"
cat "$T/err3"
grep -q "is not a directory" "$T/err3"
echo "== 4. a cache folder writable by others is refused"
mkdir -m 777 "$T/shared-cache" && chown "$U" "$T/shared-cache" && chmod 777 "$T/shared-cache"
as_user env REFNET_NUMPY_MAX_MACS=0 REFNET_NUMBA_CACHE="$T/shared-cache" "$T/venv/bin/refnet" run --zoo lenet-mnist --image "$IMG" \
  -o "$T/out/run4.png" 2> "$T/err4"
cat "$T/err4"
grep -q "writable by others" "$T/err4"
[ -z "$(ls -A "$T/shared-cache")" ]
echo "== 5. info, compare, bench, generate, demo from a folder the user cannot write (outputs elsewhere)"
R="$T/venv/bin/refnet"
as_user "$R" info --zoo lenet-mnist > /dev/null
as_user "$R" compare --zoo lenet-mnist --random --json "$T/out/c.json" > /dev/null || [ $? = 1 ]
as_user "$R" bench --zoo lenet-mnist --repeat 2 > /dev/null
as_user "$R" generate googlenet --out "$T/out/g" > /dev/null
as_user "$R" demo --out "$T/out/demo" --models lenet-mnist --no-builtins --no-selfcheck > /dev/null
[ -s "$T/out/c.json" ] && [ -s "$T/out/g.caffemodel" ] && [ -d "$T/out/demo" ]
echo "== 6. an output into the unwritable folder fails before the work, in one line, exit 2"
set +e
as_user "$R" info --zoo lenet-mnist --json x.json 2> "$T/err6"; rc=$?
set -e
cat "$T/err6"
[ "$rc" = 2 ] && [ "$(wc -l < "$T/err6")" = 1 ] && grep -q "not writable" "$T/err6"
echo "readonly_install: OK"
