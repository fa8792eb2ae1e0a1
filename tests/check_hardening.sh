#!/bin/sh
# Fails unless BINARY is hardened as the top CMakeLists.txt asks: a position-independent
# executable, full RELRO (a GNU_RELRO segment and BIND_NOW), stack-protector canaries, and
# _FORTIFY_SOURCE's checked libc calls. Reads the ELF with readelf (binutils).
#
#   check_hardening.sh build/proxy/credproxy
set -u
bin=$1
fail=0
check() { # check WHAT OK
    if [ "$2" = 0 ]; then echo "ok:   $1"; else echo "FAIL: $1"; fail=1; fi
}
header=$(readelf -hW "$bin") || exit 1
dynamic=$(readelf -dW "$bin")
segments=$(readelf -lW "$bin")
symbols=$(readelf -sW --dyn-syms "$bin")

echo "$header" | grep -q 'Type:[[:space:]]*DYN'; r1=$?
echo "$dynamic" | grep -q 'FLAGS_1.*PIE'; r2=$?
check "PIE (ELF type DYN, FLAGS_1 PIE)" $((r1 | r2))
echo "$segments" | grep -q 'GNU_RELRO'; check "RELRO (GNU_RELRO segment)" $?
echo "$dynamic" | grep -Eq 'BIND_NOW|FLAGS_1.* NOW'; check "full RELRO (BIND_NOW)" $?
echo "$symbols" | grep -q '__stack_chk_fail'; check "stack protector (__stack_chk_fail)" $?
n=$(echo "$symbols" | grep -Eo '__[a-z_]+_chk(@[A-Z_0-9.]+)?' | sort -u | tee /dev/stderr | wc -l)
[ "$n" -gt 0 ]; check "_FORTIFY_SOURCE ($n checked libc functions)" $?
exit $fail
