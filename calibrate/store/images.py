"""Registering labeled images: the ground truth every score is compared with."""

from __future__ import annotations

import gc
import operator
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from calibrate.errors import InputError
from calibrate.store._base import StoreBase, _check_name

if TYPE_CHECKING:  # pragma: no cover
    from calibrate.manifest import LabeledImage

__all__ = ["ImagesMixin", "content_key", "content_key_sql"]

_IMAGE_FIELD_NAMES = ("image_id", "uri", "content_hash", "labels", "split")

#: Fields read when present (older LabeledImage-like objects may lack them).
_OPTIONAL_FIELD_NAMES = ("width", "height", "objects")


class ImagesMixin(StoreBase):
    """Registers images (:meth:`add_images`) and turns image ids into keys."""

    def add_images(self, dataset: str, images: Iterable[LabeledImage], *,
                   complete: bool = False) -> None:
        """Register labeled images of a dataset (insert, or update when they changed).

        An image is identified by its id and its content (``content_hash``; the URI of a
        remote image): that identity is what a score belongs to. An image already
        registered with the same content gets the new ``uri``, ``labels`` and ``split``
        (changed labels are a correction of the ground truth, which every later curve
        uses). An image whose content changed is a new image under the same id: the old
        one is kept for the runs that scored it but no longer counts in any curve (it is
        not *current*), so a score of the old content never stands for the new one.
        Re-adding unchanged images writes nothing.

        Parameters
        ----------
        dataset : str
            Name of the labeled set, as later passed to :meth:`begin_run`.
        images : iterable of LabeledImage
            Each needs ``image_id``, ``uri``, ``labels``, ``content_hash``, ``split``;
            ``objects`` (ground-truth boxes in pixels, None when the manifest has none),
            ``width`` and ``height`` are stored when present. An image's boxes are
            replaced by the new ones whenever they differ (like its labels).
        complete : bool, default False
            ``images`` is the whole dataset now (a manifest as read): images of the
            dataset that are not among them stop counting in curves. Their rows and
            scores are kept; adding them again makes them count again. With False,
            ``images`` are added to (or update) the dataset.

        Raises
        ------
        InputError
            If an image id appears twice, or an image lacks an id, URI or valid labels.
        StoreError
            If the store is read-only.
        """
        _check_name(dataset, "dataset")
        images = images if isinstance(images, (list, tuple)) else list(images)
        if not images and not complete:
            return
        # The per-image work runs with the garbage collector paused: building millions of
        # small lists otherwise triggers repeated full-heap collections that cost several
        # times the work itself (10^6 images: about 7 s instead of 1.5 s). The helper's
        # lists are freed by reference counting before collection resumes.
        with _gc_paused():
            table, ids, object_lists = _images_table(dataset, images)
            objects = _objects_table(ids, object_lists)
        with self._lock:
            self._require_writable("add images")
            with self._transaction(f"adding images to dataset {dataset!r}") as con:
                self._lock_dataset(con, dataset)
                src = f"_calibrate_images_{uuid.uuid4().hex}"
                obj_src = f"_calibrate_objects_{uuid.uuid4().hex}"
                con.register(src, table)
                con.register(obj_src, objects)
                try:
                    self._upsert_images(con, dataset, src, complete=complete,
                                        objects=obj_src)
                finally:
                    con.unregister(src)
                    con.unregister(obj_src)

    @classmethod
    def _upsert_images(cls, con, dataset: str, src: str, *, complete: bool = False,
                       objects: str | None = None) -> None:
        """Upsert rows (image_id, uri, content_hash, labels, split) of relation ``src``.

        Four set-wise statements, no row-by-row work: retire current rows whose content
        changed (and, with ``complete``, rows missing from ``src``); update rows of the
        same identity where anything differs (making a retired identity current again,
        e.g. an image put back); insert identities not seen before. UPDATE plus INSERT is
        about twice as fast in DuckDB as ``INSERT ... ON CONFLICT DO UPDATE``, and a
        manifest re-added unchanged touches nothing.

        With ``objects`` (a relation of ground-truth boxes by image_id), ``src`` also
        has ``width``, ``height`` and ``has_objects``, which are written like the labels,
        and each image's boxes are replaced where they differ. Without it (a Parquet
        import, which carries no boxes) those columns and boxes are left as they are.
        """
        same_id = "images.dataset = $dataset AND images.image_id = s.image_id"
        mine, theirs = content_key_sql("images"), content_key_sql("s")
        size_cols = ("width", "height", "has_objects") if objects is not None else ()
        size_set = "".join(f", {c} = s.{c}" for c in size_cols)
        size_differs = "".join(f"\n                       OR images.{c} IS DISTINCT FROM s.{c}"
                               for c in size_cols)
        size_names = "".join(f", {c}" for c in size_cols)
        size_values = "".join(f", s.{c}" for c in size_cols)
        con.execute(
            f"""UPDATE images SET current = false FROM {src} s
                WHERE {same_id} AND images.current AND {mine} IS DISTINCT FROM {theirs}""",
            {"dataset": dataset},
        )
        if complete:
            con.execute(
                f"""UPDATE images SET current = false
                    WHERE dataset = $dataset AND current
                      AND image_id NOT IN (SELECT image_id FROM {src})""",
                {"dataset": dataset},
            )
        con.execute(
            f"""UPDATE images SET uri = s.uri, content_hash = s.content_hash,
                                  labels = s.labels, split = s.split, current = true{size_set}
                FROM {src} s
                WHERE {same_id} AND {mine} IS NOT DISTINCT FROM {theirs}
                  AND (NOT images.current
                       OR images.uri IS DISTINCT FROM s.uri
                       OR images.content_hash IS DISTINCT FROM s.content_hash
                       OR images.labels IS DISTINCT FROM s.labels
                       OR images.split IS DISTINCT FROM s.split{size_differs})""",
            {"dataset": dataset},
        )
        con.execute(
            f"""INSERT INTO images (dataset, image_id, uri, content_hash, labels, split{size_names})
                SELECT $dataset, s.image_id, s.uri, s.content_hash, s.labels, s.split{size_values}
                FROM {src} s
                WHERE NOT EXISTS (SELECT 1 FROM images i
                                  WHERE i.dataset = $dataset AND i.image_id = s.image_id
                                    AND {content_key_sql("i")} IS NOT DISTINCT FROM {theirs})""",
            {"dataset": dataset},
        )
        if objects is not None:
            cls._replace_objects(con, dataset, src, objects)

    @staticmethod
    def _replace_objects(con, dataset: str, src: str, objects: str) -> None:
        """Make the boxes of the current images of ``src`` those of ``objects``.

        Only images whose boxes differ (as multisets) are touched: their rows are deleted
        and the new ones inserted, so a manifest registered again unchanged writes
        nothing. A set with no boxes, in a store with none, costs one count.
        """
        n_new = con.execute(f"SELECT count(*) FROM {objects}").fetchall()[0][0]
        if not n_new and not con.execute(
                "SELECT EXISTS (SELECT 1 FROM objects)").fetchall()[0][0]:
            return
        cols = "label, x_min, y_min, x_max, y_max, ignore"
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE _calibrate_object_keys AS
                SELECT i.image_key, i.image_id FROM images i
                JOIN {src} s ON s.image_id = i.image_id
                WHERE i.dataset = $dataset AND i.current""",
            {"dataset": dataset},
        )
        try:
            con.execute(
                f"""CREATE OR REPLACE TEMP TABLE _calibrate_objects_new AS
                    SELECT k.image_key, o.seq, {", ".join("o." + c for c in cols.split(", "))}
                    FROM {objects} o JOIN _calibrate_object_keys k USING (image_id)"""
            )
            con.execute(
                f"""CREATE OR REPLACE TEMP TABLE _calibrate_objects_changed AS
                    SELECT DISTINCT image_key FROM (
                        (SELECT image_key, {cols} FROM objects
                         WHERE image_key IN (SELECT image_key FROM _calibrate_object_keys)
                         EXCEPT ALL
                         SELECT image_key, {cols} FROM _calibrate_objects_new)
                        UNION ALL
                        (SELECT image_key, {cols} FROM _calibrate_objects_new
                         EXCEPT ALL
                         SELECT image_key, {cols} FROM objects
                         WHERE image_key IN (SELECT image_key FROM _calibrate_object_keys)))"""
            )
            con.execute("""DELETE FROM objects WHERE image_key IN
                           (SELECT image_key FROM _calibrate_objects_changed)""")
            con.execute(
                f"""INSERT INTO objects (image_key, {cols})
                    SELECT image_key, {cols} FROM _calibrate_objects_new
                    WHERE image_key IN (SELECT image_key FROM _calibrate_objects_changed)
                    ORDER BY image_key, seq"""
            )
        finally:
            for table in ("_calibrate_object_keys", "_calibrate_objects_new",
                          "_calibrate_objects_changed"):
                con.execute(f"DROP TABLE IF EXISTS {table}")

    def _image_keys(self, dataset: str, image_ids: list[str]) -> dict[str, int]:
        if not image_ids:
            return {}
        wanted = list(dict.fromkeys(image_ids))
        rows = self._db().execute(
            "SELECT image_id, image_key FROM images WHERE dataset = $dataset AND current "
            "AND image_id IN (SELECT unnest($ids::VARCHAR[]))",
            {"dataset": dataset, "ids": wanted},
        ).fetchall()
        keys = {image_id: int(key) for image_id, key in rows}
        missing = [i for i in wanted if i not in keys]
        if missing:
            raise InputError(_missing_images_message(dataset, len(missing), missing[:5]))
        return keys


def content_key_sql(table: str) -> str:
    """SQL for what identifies an image's content, as :func:`content_key` computes it."""
    return (f"coalesce(nullif({table}.content_hash, ''), CASE WHEN contains({table}.uri, '://') "
            f"AND NOT starts_with({table}.uri, 'file://') THEN {table}.uri END)")


def content_key(image: Any) -> str | None:
    """What identifies an image's content: its hash, else the URI of a remote image.

    A remote object is named by its URI (the dataset fingerprint does the same); a local
    file read without hashing has no known content (None), so nothing can be matched
    to it by content.
    """
    if image.content_hash:
        return image.content_hash
    uri = image.uri
    if "://" in uri and not uri.startswith("file://"):
        return uri
    return None


def _missing_images_message(dataset: str, n: int, examples: list[str]) -> str:
    return (
        f"{n} image(s) are not registered in dataset {dataset!r} (e.g. "
        f"{', '.join(map(repr, examples))}), so their ground truth is unknown. Call "
        f"store.add_images({dataset!r}, images) with the labeled set before recording "
        "scores for it."
    )


def _has_image_fields(obj: Any) -> bool:
    return all(hasattr(obj, f) for f in _IMAGE_FIELD_NAMES)


@contextmanager
def _gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _images_table(dataset: str, images: list) -> tuple[pa.Table, list, list]:
    """Columns of ``images`` (LabeledImage-like) as an Arrow table, validated, their
    ids, and each image's ``objects`` (None where it has no boxes)."""
    # One C-level pass per field instead of a Python loop over images.
    try:
        ids, uris, hashes, label_sets, splits = (
            list(map(operator.attrgetter(f), images)) for f in _IMAGE_FIELD_NAMES
        )
    except AttributeError as exc:
        bad = next(i for i, img in enumerate(images) if not _has_image_fields(img))
        raise InputError(
            f"images[{bad}] is not a LabeledImage ({type(images[bad]).__name__}: {exc}). "
            "Read images with calibrate.manifest."
        ) from None
    if any(isinstance(s, str) for s in label_sets):
        bad = next(i for i, s in enumerate(label_sets) if isinstance(s, str))
        raise InputError(
            f"image {ids[bad]!r}: labels must be a set of label names, got the string "
            f"{label_sets[bad]!r}. Use frozenset({{...}})."
        )
    widths, heights, object_lists = (_optional_field(images, f) for f in _OPTIONAL_FIELD_NAMES)
    _check_sizes(ids, widths, heights)
    try:
        table = pa.table(
            {
                "image_id": pa.array(ids, pa.string()),
                "uri": pa.array(uris, pa.string()),
                "content_hash": pa.array(hashes, pa.string()),
                "labels": pa.array(list(map(sorted, label_sets)), pa.list_(pa.string())),
                "split": pa.array(splits, pa.string()),
                "width": pa.array(widths, pa.int32()),
                "height": pa.array(heights, pa.int32()),
                "has_objects": pa.array([o is not None for o in object_lists], pa.bool_()),
            }
        )
    except (pa.ArrowException, TypeError) as exc:
        raise InputError(
            f"images for dataset {dataset!r} have a field of the wrong type ({exc}): "
            "image_id, uri, content_hash and split must be strings (hash and split may "
            "be None), labels a set of strings, width and height integers or None."
        ) from None
    for col, what in (("image_id", "an image_id"), ("uri", "a uri")):
        arr = table[col]
        empty = arr.null_count + (
            pc.sum(pc.equal(pc.utf8_length(arr), 0)).as_py() or 0
        )
        if empty:
            raise InputError(
                f"{empty} image(s) for dataset {dataset!r} lack {what}; every image "
                "needs a non-empty image_id and uri."
            )
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))
        raise InputError(
            f"image id {dup!r} appears twice in the images for dataset {dataset!r}; "
            "ids must be unique within a dataset. Fix the manifest."
        )
    return table, ids, object_lists


def _check_sizes(ids: list, widths: list, heights: list) -> None:
    """Image sizes are positive integers, both or neither."""
    if widths.count(None) == len(widths) and heights.count(None) == len(heights):
        return
    for image_id, w, h in zip(ids, widths, heights):
        if w is None and h is None:
            continue
        ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (w, h))
        if not ok:
            raise InputError(
                f"image {image_id!r}: width and height must be positive integers (pixels), "
                f"both or neither; got width={w!r}, height={h!r}."
            )


def _optional_field(images: list, name: str) -> list:
    try:
        return list(map(operator.attrgetter(name), images))
    except AttributeError:
        return [getattr(img, name, None) for img in images]


def _objects_table(ids: list[str], object_lists: list) -> pa.Table:
    """The ground-truth boxes of the images as an Arrow table keyed by image_id."""
    cols: dict[str, list] = {c: [] for c in ("image_id", "label", "x_min", "y_min", "x_max",
                                             "y_max", "ignore")}
    if object_lists.count(None) == len(object_lists):
        object_lists = []
    for image_id, objects in zip(ids, object_lists):
        for obj in objects or ():
            cols["image_id"].append(image_id)
            cols["label"].append(obj.label)
            x_min, y_min, x_max, y_max = obj.box
            cols["x_min"].append(x_min)
            cols["y_min"].append(y_min)
            cols["x_max"].append(x_max)
            cols["y_max"].append(y_max)
            cols["ignore"].append(bool(obj.ignore))
    # seq: the manifest's order, which the rowids of an image's boxes keep (a join
    # does not keep row order, and a sort by image alone need not be stable).
    return pa.table({
        "image_id": pa.array(cols["image_id"], pa.string()),
        "seq": pa.array(range(len(cols["image_id"])), pa.int64()),
        "label": pa.array(cols["label"], pa.string()),
        **{c: pa.array(cols[c], pa.float64()) for c in ("x_min", "y_min", "x_max", "y_max")},
        "ignore": pa.array(cols["ignore"], pa.bool_()),
    })
