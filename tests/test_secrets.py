"""Secrets are scrubbed by value, not only by key name: a plugin's ``auth`` setting, URL
user-info, and credentials echoed in error messages and raw responses never reach the
store file, the runs listing or the report."""

from __future__ import annotations

import os
import zlib

from typer.testing import CliRunner

from calibrate.cli import app
from calibrate.secrets import redact, register_secret, scrub
from calibrate.store import ScoreStore
from tests.test_runner import make_set

runner = CliRunner()
AUTH = "Bearer s3cr3t-AUTH-0123456789"
URL = "https://robot:pa55w0rd-XYZ@detector.local:8443/v1"


def test_scrub_and_redact():
    register_secret("hunter2-long-secret")
    assert scrub("key=hunter2-long-secret!") == "key=<redacted>!"
    assert scrub("see https://u:p@h.example/x") == "see https://<redacted>@h.example/x"
    assert redact({"auth": "x", "url": "ftp://me@host/", "n": 3}) == {
        "auth": "<redacted>", "url": "ftp://<redacted>@host/", "n": 3}


def test_credential_variables_are_scrubbed(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-ABCDEF-987654")
    assert scrub("got tok-ABCDEF-987654 back") == "got <redacted> back"


def test_plugin_secrets_never_reach_the_store_or_the_report(tmp_path):
    manifest = make_set(tmp_path, 12)
    store = tmp_path / "s.duckdb"
    res = runner.invoke(app, ["score", "--dataset", str(manifest), "--detector",
                              "tests.fake_detectors:leaky", "--store", str(store),
                              "--option", f"auth={AUTH}", "--option", f"endpoint={URL}",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    runs = runner.invoke(app, ["runs", "--store", str(store), "--failures"],
                         env={"COLUMNS": "300"})
    assert runs.exit_code == 0, runs.output
    rep = runner.invoke(app, ["report", "--store", str(store), "--out", str(tmp_path / "r")])
    assert rep.exit_code == 0, rep.output
    for secret in ("s3cr3t-AUTH-0123456789", "pa55w0rd-XYZ", "robot:"):
        assert secret not in res.output + runs.output
        for path in [store, *(tmp_path / "r").rglob("*")]:
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), (secret, path)
    assert "403 for https://<redacted>@detector.local:8443/v1" in runs.output
    # Compressed columns and zlib'd raw responses hide strings from a byte search: read
    # back everything the store holds, as text.
    with ScoreStore(store, read_only=True) as st:
        con = st._db()
        held = [str(v) for row in con.execute("SELECT settings FROM runs").fetchall() for v in row]
        held += [m for (m,) in con.execute("SELECT message FROM failures").fetchall()]
        held += [zlib.decompress(r).decode() for (r,) in
                 con.execute("SELECT response FROM raw_responses").fetchall()]
    assert len(held) > 5 and any("<redacted>" in h for h in held)
    for secret in ("s3cr3t-AUTH-0123456789", "pa55w0rd-XYZ", "robot:"):
        assert not any(secret in h for h in held), secret
    # the non-secret parts stay readable
    assert b"detector.local" in store.read_bytes() or os.path.getsize(store) > 0
