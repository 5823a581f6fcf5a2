#!/usr/bin/env bash
# Fetch onnxruntime's C API headers into DEST without installing anything system-wide.
# 1) Debian trixie's libonnxruntime-dev (API 21), downloaded with apt-get download using a
#    private sources list built from this machine's own Debian mirror, and unpacked with dpkg -x;
# 2) onnxruntime's release archive, for machines with internet but no apt.
# Prints the include directory on success.
set -euo pipefail
dest="$1"
ort_version="${ORT_HEADERS_VERSION:-1.21.0}"
mkdir -p "$dest"
found() { find "$dest" -name onnxruntime_c_api.h -printf '%h\n' 2>/dev/null | head -n 1; }
if [ -n "$(found)" ]; then found; exit 0; fi

if command -v apt-get >/dev/null && command -v dpkg >/dev/null; then
  (
    set -e
    work="$dest/apt"; mkdir -p "$work/lists/partial" "$work/archives/partial"
    mirror=$( (grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources || true; \
               grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print "URIs: " $2}' || true) \
             | awk '{print $2}' | grep -v security | head -n 1)
    [ -n "$mirror" ] || { echo "no Debian mirror configured" >&2; exit 1; }
    echo "deb $mirror trixie main" > "$work/sources.list"
    opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$work/lists" -o "Dir::Cache::Archives=$work/archives"
          -o APT::Architecture=amd64 -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
    apt-get "${opts[@]}" -qq update >&2
    cd "$work" && apt-get "${opts[@]}" -qq download libonnxruntime-dev >&2
    dpkg -x "$work"/libonnxruntime-dev_*.deb "$dest/deb"
  ) && [ -n "$(found)" ] && { found; exit 0; }
  echo "apt-get download of libonnxruntime-dev failed; trying the release archive" >&2
fi

url="https://github.com/microsoft/onnxruntime/releases/download/v${ort_version}/onnxruntime-linux-x64-${ort_version}.tgz"
if command -v curl >/dev/null; then curl -fsSL "$url" | tar -xz -C "$dest"; else
  python3 -c "import sys,urllib.request,tarfile,io; tarfile.open(fileobj=io.BytesIO(urllib.request.urlopen(sys.argv[1]).read())).extractall(sys.argv[2])" "$url" "$dest"; fi
[ -n "$(found)" ] && { found; exit 0; }
echo "could not obtain onnxruntime headers" >&2
exit 1
