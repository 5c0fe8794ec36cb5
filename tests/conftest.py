import pytest

from tests.parts_fixture import build_parts_store


@pytest.fixture(scope="session")
def parts_store(tmp_path_factory):
    """(manifest, store path) of a 600-image parts set scored by surface-defect v1 and v2."""
    return build_parts_store(tmp_path_factory.mktemp("parts"))


@pytest.fixture(scope="session")
def pg_server():
    """A throwaway PostgreSQL cluster for the session (see tests/pg_server.py)."""
    from tests.pg_server import server_or_skip

    server = server_or_skip()
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server):
    """The URL of a fresh, empty PostgreSQL database for one test."""
    return pg_server.new_database()
