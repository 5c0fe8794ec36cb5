import pytest

from tests.parts_fixture import build_parts_store


@pytest.fixture(scope="session")
def parts_store(tmp_path_factory):
    """(manifest, store path) of a 600-image parts set scored by surface-defect v1 and v2."""
    return build_parts_store(tmp_path_factory.mktemp("parts"))
