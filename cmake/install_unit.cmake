# Installs conf/examples/credproxy.service with its Exec lines pointing at the installed
# binary. Run at install time (install(CODE) includes it), because the prefix is known only
# then: cmake --install --prefix P and CPack (prefix /usr) each get their own path.
# Expects CREDPROXY_UNIT_SRC, CREDPROXY_UNIT_DIR (relative to the prefix, or absolute),
# CREDPROXY_SBINDIR (likewise) and CREDPROXY_UNIT_WORK (a directory in the build tree).
file(READ "${CREDPROXY_UNIT_SRC}" unit)
if(IS_ABSOLUTE "${CREDPROXY_SBINDIR}")
  set(sbin "${CREDPROXY_SBINDIR}")
else()
  set(sbin "${CMAKE_INSTALL_PREFIX}/${CREDPROXY_SBINDIR}")
endif()
# ExecStart=/usr/local/bin/credproxy ... (and any other Exec line naming the binary).
string(REGEX REPLACE "(\nExec[A-Za-z]*=[-@:+!]*)[^ \n]*/credproxy([ \n])" "\\1${sbin}/credproxy\\2"
       installed "${unit}")
if(NOT installed MATCHES "\nExecStart=[-@:+!]*${sbin}/credproxy[ \n]")
  message(FATAL_ERROR "${CREDPROXY_UNIT_SRC}: no ExecStart=.../credproxy line to point at ${sbin}")
endif()
string(MD5 tag "${sbin}")
set(out "${CREDPROXY_UNIT_WORK}/${tag}/credproxy.service")
file(WRITE "${out}" "${installed}")
if(IS_ABSOLUTE "${CREDPROXY_UNIT_DIR}")
  set(dest "${CREDPROXY_UNIT_DIR}")
else()
  set(dest "${CMAKE_INSTALL_PREFIX}/${CREDPROXY_UNIT_DIR}")
endif()
file(INSTALL DESTINATION "${dest}" TYPE FILE PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ
     WORLD_READ FILES "${out}")
