"""Shared pytest fixtures."""
import pathlib

import pytest

# TF-Slim ground truth, made by TF-Slim itself (tests/fixtures/slim_resnet_v2/README.md).
REFERENCE_DIR = pathlib.Path(__file__).resolve().parent / "fixtures/slim_resnet_v2"


@pytest.fixture(scope="session")
def reference_dir():
  """REFERENCE_DIR; fails (never skips) when it is missing."""
  assert REFERENCE_DIR.is_dir(), f"slim reference fixtures missing: {REFERENCE_DIR}"
  return REFERENCE_DIR
