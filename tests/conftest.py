"""Shared pytest fixtures."""
import pathlib

import pytest

# TF-Slim ground truth; CI places shared/ beside the clone, as here.
REFERENCE_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared/reference/slim_resnet_v2"


@pytest.fixture(scope="session")
def reference_dir():
  """REFERENCE_DIR; fails (never skips) when it is missing."""
  assert REFERENCE_DIR.is_dir(), f"slim reference fixtures missing: {REFERENCE_DIR}"
  return REFERENCE_DIR
