"""A real multi-label benchmark set: OpenMoji emoji with their Unicode CLDR keywords and groups,
and the Noto Color Emoji design of the test emoji (README.md). Built by

    python -m benchmarks.openmoji.build --out DIR

fetch.py: the npm tarballs; labels.py: keywords, vocabulary, families and splits; render.py: the
images; build.py: the main, which writes the set in the toolkit's input formats.
"""

from multilabel.errors import UserError


class MissingDependency(UserError):
  """A program or library the build needs is not installed: one line saying what to install,
  exit status 2 (errors.run)."""

  status = 2
