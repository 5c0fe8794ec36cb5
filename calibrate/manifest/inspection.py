"""Inspecting image files: does each exist, is it a complete image, what is its content hash.

Inspection never raises for a bad file: it returns what it found, and
:mod:`calibrate.manifest.assembly` turns that into a :class:`~calibrate.manifest.Problem`
of the image, so one damaged file does not stop a set from being read.
"""

from __future__ import annotations

import hashlib
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import repeat

__all__ = [
    "CORRUPT",
    "EMPTY",
    "MISSING",
    "NOT_A_FILE",
    "UNREADABLE",
    "header_size",
    "oriented_size",
]

# Kinds of Problem, i.e. the "error kind" the runner stores for the image's failure.
MISSING = "missing"
NOT_A_FILE = "not_a_file"
EMPTY = "empty"
UNREADABLE = "unreadable"
CORRUPT = "corrupt"

_HASH_CHUNK = 1 << 20  # 1 MiB: large enough that per-call overhead vanishes


@dataclass(frozen=True)
class _Inspection:
    content_hash: str | None = None
    kind: str | None = None  # a Problem kind, None when the file is usable
    detail: str = ""
    size: tuple[int, int] | None = None  # (width, height), EXIF orientation applied


_REMOTE = _Inspection()


def _inspect_all(
    paths: list[str | None], hash_images: bool, decode: bool = False
) -> list[_Inspection]:
    """Inspect local files (None = remote, not inspected), keeping the order."""
    local = [p for p in paths if p is not None]
    if len(local) < 8:
        done = [_inspect(p, hash_images, decode) for p in local]
    else:
        # Threads, not processes: reads, hashlib (on large buffers) and Pillow's
        # decoders all release the GIL, and nothing needs pickling.
        workers = min(32, (os.cpu_count() or 1) + 4, len(local))
        with ThreadPoolExecutor(workers, thread_name_prefix="calibrate-inspect") as pool:
            done = list(
                pool.map(_inspect, local, repeat(hash_images), repeat(decode), chunksize=16)
            )
    it = iter(done)
    return [_REMOTE if p is None else next(it) for p in paths]


def _inspect(path: str, hash_images: bool, decode: bool = False) -> _Inspection:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return _Inspection(kind=MISSING, detail="does not exist")
    except OSError as exc:
        return _Inspection(kind=UNREADABLE, detail=f"cannot be read ({exc.strerror or exc})")
    if not stat.S_ISREG(st.st_mode):
        return _Inspection(kind=NOT_A_FILE, detail="is not a regular file (a folder?)")
    if st.st_size == 0:
        return _Inspection(kind=EMPTY, detail="is a zero-byte file (an interrupted copy?)")
    if not hash_images:
        return _Inspection()
    try:
        digest = _sha256_file(path)
    except OSError as exc:
        return _Inspection(kind=UNREADABLE, detail=f"cannot be read ({exc.strerror or exc})")
    size: list = []
    trouble = _image_trouble(path, decode, size)
    if trouble:
        return _Inspection(
            content_hash=digest,
            kind=CORRUPT,
            detail=f"is not a readable image ({trouble}); it may be truncated or damaged",
        )
    return _Inspection(content_hash=digest, size=size[0] if size else None)


#: EXIF orientations that turn the image a quarter turn (width and height swap).
_QUARTER_TURNS = (5, 6, 7, 8)


def oriented_size(img) -> tuple[int, int]:
    """``(width, height)`` of an opened Pillow image as displayed: with its EXIF
    orientation applied, as :meth:`LabeledImage.open` and the cloud APIs see it.
    Reads only the header."""
    from PIL import Image

    width, height = img.size
    orientation = None
    # The EXIF block as read with the header (JPEG APP1, PNG eXIf, which precedes the
    # image data): parsed apart from the image, so a PNG can still be verified after.
    raw = img.info.get("exif")
    if raw:
        try:
            exif = Image.Exif()
            exif.load(raw)
            orientation = exif.get(0x0112)
        except Exception:  # noqa: BLE001 - a damaged EXIF block: the stored orientation
            orientation = None
    return (height, width) if orientation in _QUARTER_TURNS else (width, height)


def header_size(path: str) -> tuple[int, int] | None:
    """The displayed ``(width, height)`` of an image file from its header, or None when
    the file cannot be read as an image."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return oriented_size(img)
    except Exception:  # noqa: BLE001 - unreadable: the caller reports the missing size
        return None


def _sha256_file(path: str) -> str:
    """``sha256:<hex>`` of a file, read in 1 MiB chunks into one reused buffer."""
    digest = hashlib.sha256()
    buffer = bytearray(_HASH_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buffer):
            digest.update(view[:n])
    return "sha256:" + digest.hexdigest()


def _image_trouble(path: str, decode: bool, size: list | None = None) -> str | None:
    """Why the file is not a usable image, or None (appending its displayed size to
    ``size`` when given: the header is read anyway).

    The quick check (default) reads headers with Pillow, then checks PNG chunk
    checksums (``verify``, no inflating) or walks a JPEG's markers and requires an
    end-of-image marker after the scan data: this catches non-images, damaged headers,
    truncation and damaged PNG bytes at about the cost of hashing. Decoding (1/8 scale
    for JPEG) also catches some damage inside JPEG scan data, but costs ~15x more.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            fmt = img.format
            if size is not None:
                size.append(oriented_size(img))
            if decode or fmt not in ("PNG", "JPEG", "MPO"):
                if fmt in ("JPEG", "MPO"):
                    # 1/8 scale skips most of the inverse DCT but still entropy-decodes
                    # every byte, so damaged or missing data is still seen.
                    img.draft(None, (max(1, img.width // 8), max(1, img.height // 8)))
                img.load()
                return None
            if fmt == "PNG":
                img.verify()
                return None
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "not usable"
        return f"{type(exc).__name__}: {exc}"
    # JPEG, and MPO (how Pillow names the JPEGs of many phone cameras).
    try:
        return _jpeg_end_trouble(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"


def _jpeg_end_trouble(path: str) -> str | None:
    """None if the JPEG has an end-of-image marker after its first scan, else why not.

    A naive "ends with FF D9" test is wrong both ways: phones append data after the
    image (motion photos), and an EXIF thumbnail holds its own FF D9 before the main
    image. So walk the marker segments up to the first start-of-scan (SOS), then look
    for FF D9 after it: in scan data every FF byte is stuffed (FF 00) or a restart
    marker, so the first FF D9 there is the image's real end.
    """
    with open(path, "rb") as fh:
        data = fh.read()
    n, pos = len(data), 2
    if data[:2] != b"\xff\xd8":
        return "no JPEG start-of-image marker"
    while True:
        if pos + 4 > n:
            return "truncated before the image data"
        if data[pos] != 0xFF:
            return f"damaged marker structure at byte {pos}"
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        if marker == 0xD9:
            return "the image ends before any image data"
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
    # Searching from the end finds the marker at once in a complete file; any FF D9
    # after the scan start proves the scan data is complete, since data appended after
    # the image (and so any FF D9 in it) exists only if the image ended first.
    if data.rfind(b"\xff\xd9", pos) < 0:
        return "truncated: no end-of-image marker after the image data"
    return None
