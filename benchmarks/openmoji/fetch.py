"""The two npm tarballs the set is built from, pinned by version and sha1, fetched once into a
cache with `npm pack` (which downloads a package's tarball and runs nothing), and read from
there without unpacking them to disk.
"""

import hashlib
import os
import shutil
import subprocess
import tarfile

from benchmarks.openmoji import MissingDependency
from multilabel.errors import DataError

# (npm package, version, sha1 of the tarball as `npm pack` reports it)
OPENMOJI = ("openmoji", "17.0.0", "ee8094c5c0de0d2126b77ceb074d62b6fe2071d0")
NOTO = ("emoji-datasource-google", "16.0.0", "a80ac3e8106cbd4d8648ce758aa099e8827b6157")


def sha1_of(path):
  digest = hashlib.sha1()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def fetch_tarball(package, cache):
  """The path of `name-version.tgz` in `cache`, fetched with `npm pack` (which downloads the
  tarball and runs nothing) unless a copy is there; its sha1 is checked either way."""
  name, version, sha1 = package
  path = os.path.join(cache, f"{name}-{version}.tgz")
  if not os.path.exists(path):
    npm = shutil.which("npm")
    if npm is None:
      raise MissingDependency(f"npm is needed to fetch {name}@{version} (or put "
                              f"{name}-{version}.tgz into {cache}): install Node.js and npm, "
                              "Debian: apt-get install npm")
    os.makedirs(cache, exist_ok=True)
    print(f"fetching {name}@{version} with npm pack into {cache}", flush=True)
    done = subprocess.run([npm, "pack", f"{name}@{version}", "--pack-destination", cache,
                           "--ignore-scripts", "--silent"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0 or not os.path.exists(path):
      said = (done.stderr.strip().splitlines() or ["no message"])[-1]
      raise DataError(f"npm pack {name}@{version} failed (exit {done.returncode}): {said}")
  found = sha1_of(path)
  if found != sha1:
    raise DataError(f"{path}: sha1 {found}, expected {sha1} (a damaged or different tarball: "
                    "delete it to fetch it again)")
  return path


def read_tarball(path, wanted):
  """{member name: bytes} for the tarball's regular files for which wanted(name) is true."""
  files = {}
  with tarfile.open(path, "r:gz") as tar:
    for member in tar:
      if member.isfile() and wanted(member.name):
        files[member.name] = tar.extractfile(member).read()
  return files
