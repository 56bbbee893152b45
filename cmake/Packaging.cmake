# CPack: `cpack -G DEB` in the build directory makes a Debian package of what
# `cmake --install` installs, for /usr (the configuration in /etc).
set(SP_DEB_MAINTAINER "shell-pool maintainers <maintainers@users.noreply.b-seed-30606576.example>"
    CACHE STRING "Maintainer: field of the .deb")

set(CPACK_PACKAGE_NAME shell-pool)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "crash-isolated daemon that runs shell commands for clients on a Unix socket")
set(CPACK_PACKAGE_CONTACT "${SP_DEB_MAINTAINER}")
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)  # the build keeps debug info (RelWithDebInfo)

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # shell-pool_<version>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${SP_DEB_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)  # Depends: from dpkg-shlibdeps
set(CPACK_DEBIAN_PACKAGE_SUGGESTS systemd)
# The long description; CPack puts the summary above it.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "\
shell-poold runs shell commands for clients that speak JSON-RPC 2.0 on a Unix
socket: attached jobs with streamed output, detached jobs, sessions, chains,
parallel runs and DAGs. Prespawned workers claim jobs from a shared-memory
ring; a crashed worker costs only its running jobs, never the daemon.
.
This package holds the daemon (shell-poold), its command-line client
(shell-pool), systemd system and user units (socket activation, sd_notify,
watchdog, live reload) and the default configuration
/etc/shell-pool/shell-pool.toml.")
# conffiles lists /etc/shell-pool/shell-pool.toml (the configuration under
# /usr); the scripts make systemd see the units and stop them on removal.
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    "${CMAKE_SOURCE_DIR}/dist/debian/conffiles;${CMAKE_SOURCE_DIR}/dist/debian/postinst;${CMAKE_SOURCE_DIR}/dist/debian/prerm;${CMAKE_SOURCE_DIR}/dist/debian/postrm")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)  # 0644 conffiles, 0755 scripts

include(CPack)
