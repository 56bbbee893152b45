# Installs the systemd units and the default configuration. Runs at install
# time (cmake --install, cpack), not at configure time, so that the units name
# the binaries and the configuration file where this install puts them: under
# `cmake --install --prefix P` and under CPack's /usr as well as under the
# configured prefix.
#
# Set by the install(CODE) in the top-level CMakeLists.txt that includes this:
# SP_SOURCE_DIR, SP_WORK_DIR (scratch space in the build tree) and
# GNUInstallDirs' SP_BINDIR, SP_SYSCONFDIR, SP_DOCDIR. CMAKE_INSTALL_PREFIX
# and $ENV{DESTDIR} are this install's.

# The absolute directory, as GNUInstallDirs' CMAKE_INSTALL_FULL_<dir> would be
# for this install's prefix. kind "config": the prefixes / and /usr put it in
# /etc, /opt/<name> in /etc/opt/<name>.
function(sp_full_dir out dir kind)
  string(REGEX REPLACE "/+$" "" prefix "${CMAKE_INSTALL_PREFIX}")  # "/" -> ""
  if(IS_ABSOLUTE "${dir}")
    set(full "${dir}")
  elseif(kind STREQUAL "config" AND prefix MATCHES "^(/usr)?$")
    set(full "/${dir}")
  elseif(kind STREQUAL "config" AND prefix MATCHES "^/opt/" AND NOT prefix MATCHES "^/opt/homebrew/")
    set(full "/${dir}${prefix}")
  elseif(prefix STREQUAL "" AND NOT dir MATCHES "^usr/")
    set(full "/usr/${dir}")
  else()
    set(full "${prefix}/${dir}")
  endif()
  set(${out} "${full}" PARENT_SCOPE)
endfunction()

sp_full_dir(SP_BINDIR "${SP_BINDIR}" program)
sp_full_dir(SP_DOCDIR "${SP_DOCDIR}" program)
sp_full_dir(sp_sysconfdir "${SP_SYSCONFDIR}" config)
sp_full_dir(sp_unitdir "lib/systemd" program)
set(SP_CONFIG "${sp_sysconfdir}/shell-pool/shell-pool.toml")

# A scratch directory per destination, so that installs to different places
# at the same time do not write each other's units; removed once installed.
string(MD5 sp_key "$ENV{DESTDIR}|${CMAKE_INSTALL_PREFIX}")
set(sp_work "${SP_WORK_DIR}/${sp_key}")
foreach(unit shell-pool.service shell-pool.socket)
  configure_file("${SP_SOURCE_DIR}/dist/systemd/${unit}.in" "${sp_work}/system/${unit}" @ONLY)
  configure_file("${SP_SOURCE_DIR}/dist/systemd/user/${unit}.in" "${sp_work}/user/${unit}" @ONLY)
endforeach()
foreach(scope system user)
  file(INSTALL "${sp_work}/${scope}/shell-pool.service" "${sp_work}/${scope}/shell-pool.socket"
       DESTINATION "${sp_unitdir}/${scope}"
       PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
endforeach()
file(REMOVE_RECURSE "${sp_work}")

# The configuration is the administrator's once installed: an existing one is
# kept (a package manager handles it as a conffile instead).
if(EXISTS "$ENV{DESTDIR}${SP_CONFIG}")
  message(STATUS "Keeping: $ENV{DESTDIR}${SP_CONFIG} (the default is dist/shell-pool.toml)")
else()
  file(INSTALL "${SP_SOURCE_DIR}/dist/shell-pool.toml" DESTINATION "${sp_sysconfdir}/shell-pool"
       PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
endif()
