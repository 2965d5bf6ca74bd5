# Helpers shared by start.sh and test.sh.

# apt_install PACKAGE...: installs missing Debian packages (as root, or through sudo); never fatal.
apt_install() {
  command -v apt-get >/dev/null || { echo "== no apt-get here: skipping $*"; return 0; }
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "== installing Debian packages: ${missing[*]}"
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null; } \
    || echo "== could not install ${missing[*]}; continuing without"
}

# make_venv REQUIREMENTS: creates .venv (once), installs the pinned requirements into it, then
# this checkout, editable (its dependencies are already there), so `imgsim` works from any
# directory and benchmarks import the package like any other.
make_venv() {
  [ -x .venv/bin/python ] || python3 -m venv .venv
  echo "== installing Python packages from $1"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$1"
  echo "== installing imgsim from this checkout (editable)"
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
}
