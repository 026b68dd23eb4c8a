# shellcheck shell=bash
# Sourced ON THE GPU MACHINE by build_cuda.sh and serve_run.sh, from the
# repository root: unpacks the carried Debian packages (.device-deps/*.deb,
# from fetch_deps.sh) into .device-deps/root (again whenever the set of
# packages changes), points their pkg-config files there, and exports the
# paths that find them: PREFIX, LD_LIBRARY_PATH, PKG_CONFIG_PATH, CPLUS_INCLUDE_PATH.
PREFIX="$PWD/.device-deps/root"
deps_stamp="$(ls .device-deps/*.deb | sha256sum | cut -c1-16)"
if [ "$(cat "$PREFIX/.unpacked" 2>/dev/null)" != "$deps_stamp" ]; then
  rm -rf "$PREFIX"
  for deb in .device-deps/*.deb; do dpkg -x "$deb" "$PREFIX"; done
  # NOTE: the .pc files name /usr (prefix=/usr, some libdir=/usr/lib/...);
  # without this, pkg-config would send cpp-httplib's -I and -L to /usr.
  sed -i -E "s#^([A-Za-z_]+)=/usr(/|\$)#\1=$PREFIX/usr\2#" \
    "$PREFIX"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc
  echo "$deps_stamp" > "$PREFIX/.unpacked"
fi
export LD_LIBRARY_PATH="$PREFIX/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PKG_CONFIG_PATH="$PREFIX/usr/lib/x86_64-linux-gnu/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
# httplib.h includes OpenSSL's headers, whose configuration.h Debian keeps in
# the multiarch folder; the compiler searches only /usr's by default.
export CPLUS_INCLUDE_PATH="$PREFIX/usr/include/x86_64-linux-gnu${CPLUS_INCLUDE_PATH:+:$CPLUS_INCLUDE_PATH}"
