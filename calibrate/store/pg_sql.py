"""The store's DuckDB SQL, spoken to PostgreSQL: one SQL source for both backends.

Every mixin of :class:`calibrate.store.ScoreStore` writes DuckDB SQL. On a PostgreSQL
store each statement is transpiled once by sqlglot (``read="duckdb"``,
``write="postgres"``; cached by its text), which already turns ``?`` and ``$name``
parameters into psycopg's ``%s`` and ``%(name)s``, ``'-inf'::DOUBLE`` into ``CAST('-inf'
AS DOUBLE PRECISION)``, ``list_contains`` into ``= ANY(...)``, ``FILTER`` and
``bool_or``. The few DuckDB constructs that sqlglot leaves as they are, or that
PostgreSQL 15 lacks, are rewritten here on the syntax tree:

========================================  ==============================================
DuckDB                                    PostgreSQL
========================================  ==============================================
``arg_max(a, b)``, ``arg_max_null``       ``(array_agg(a ORDER BY b DESC) FILTER ...)[1]``
``any_value(a)``                          ``min(a)`` (any_value is PostgreSQL 16+)
``GROUP BY ALL`` / ``ORDER BY ALL``       the positions of the grouped / all columns
``isnan(x)``, ``contains(s, t)``          ``x = 'NaN'``, ``strpos(s, t) > 0``
``hash(a, b, ...)``                       ``hashtextextended(ROW(a, b, ...)::text, 0)``
``CREATE OR REPLACE TEMP TABLE t AS``     ``DROP TABLE IF EXISTS t`` + ``CREATE TEMP ...``
``INSERT OR REPLACE INTO t``              ``INSERT ... ON CONFLICT (key) DO UPDATE``
``list(...) FILTER (...)[1:5]``           the same, parenthesised before the slice
``? IS NULL``                             ``CAST(%s AS TEXT) IS NULL`` (NULL has no type)
``FROM (SELECT ...)``                     the same with an alias (PostgreSQL needs one)
``INSERT INTO run_images ...``            with the image's truth, ``ON CONFLICT DO NOTHING``
========================================  ==============================================

``rowid`` needs no rewrite: the PostgreSQL tables that DuckDB code orders by ``rowid``
(``results``, ``objects``) have an identity column of that name.
"""

from __future__ import annotations

import functools
import re

import sqlglot
from sqlglot import exp

from calibrate.store.errors import StoreError

__all__ = ["to_postgres"]

#: The conflict key and the other columns of each table written with INSERT OR REPLACE.
_REPLACE_KEYS = {
    "meta": (("key",), ("value",)),
    "match_sets": (("run_key", "iou_threshold", "label"), ("fingerprint", "matched_at")),
}

_OR_REPLACE = re.compile(r"^\s*INSERT\s+OR\s+REPLACE\s+INTO\s+(\w+)", re.IGNORECASE)


def _template(sql: str, **nodes: exp.Expression) -> exp.Expression:
    """Parse PostgreSQL ``sql`` and put ``nodes`` where columns named ``__<key>`` stand."""
    tree = sqlglot.parse_one(sql, read="postgres")

    def put(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column) and node.name.startswith("__") and not node.table:
            return nodes[node.name[2:]].copy()
        return node

    return tree.transform(put)


def _arg_max(value: exp.Expression, by: exp.Expression, keep_null: bool) -> exp.Expression:
    cond = "__b IS NOT NULL" if keep_null else "__a IS NOT NULL AND __b IS NOT NULL"
    return _template(
        f"(ARRAY_AGG(__a ORDER BY __b DESC) FILTER (WHERE {cond}))[1]", a=value, b=by
    )


def _is_aggregate(node: exp.Expression) -> bool:
    return any(not agg.find_ancestor(exp.Window) for agg in node.find_all(exp.AggFunc))


def _rewrite(node: exp.Expression) -> exp.Expression:
    """One node of the DuckDB tree as PostgreSQL needs it (see the module's table)."""
    if isinstance(node, exp.ArgMax):
        return _arg_max(node.this, node.expression, keep_null=False)
    if isinstance(node, exp.Anonymous) and node.name.lower() == "arg_max_null":
        return _arg_max(node.expressions[0], node.expressions[1], keep_null=True)
    if isinstance(node, exp.IgnoreNulls) and isinstance(node.this, exp.AnyValue):
        return exp.Min(this=node.this.this.copy())
    if isinstance(node, exp.AnyValue):
        return exp.Min(this=node.this.copy())
    if isinstance(node, exp.IsNan):
        return _template("__x = CAST('NaN' AS DOUBLE PRECISION)", x=node.this)
    if isinstance(node, exp.Contains):
        return _template("STRPOS(__s, __t) > 0", s=node.this, t=node.expression)
    if isinstance(node, exp.Anonymous) and node.name.lower() == "hash":
        row = exp.Anonymous(this="ROW", expressions=[e.copy() for e in node.expressions])
        return _template("HASHTEXTEXTENDED(CAST(__r AS TEXT), 0)", r=row)
    if isinstance(node, exp.Bracket) and isinstance(node.this, (exp.Filter, exp.AggFunc)):
        node.set("this", exp.Paren(this=node.this.copy()))
        return node
    if (isinstance(node, exp.Is) and isinstance(node.this, (exp.Placeholder, exp.Parameter))
            and isinstance(node.expression, exp.Null)):
        # A NULL parameter has no type; `$x IS NULL` needs one.
        node.set("this", exp.cast(node.this.copy(), "TEXT"))
        return node
    if (isinstance(node, exp.Subquery) and not node.alias
            and isinstance(node.parent, (exp.From, exp.Join))):
        node.set("alias", exp.TableAlias(this=exp.to_identifier(f"_sub{id(node) % 10**6}")))
        return node
    if isinstance(node, exp.Select):
        _expand_all(node)
    return node


def _expand_all(select: exp.Select) -> None:
    """``GROUP BY ALL`` / ``ORDER BY ALL`` as the positions of the columns they mean."""
    group = select.args.get("group")
    if group is not None and group.args.get("all"):
        positions = [exp.Literal.number(i + 1) for i, e in enumerate(select.expressions)
                     if not _is_aggregate(e)]
        select.set("group", exp.Group(expressions=positions))
    order = select.args.get("order")
    if order is not None and len(order.expressions) == 1:
        first = order.expressions[0]
        if isinstance(first.this, exp.Var) and first.this.name.upper() == "ALL":
            select.set("order", exp.Order(expressions=[
                exp.Ordered(this=exp.Literal.number(i + 1))
                for i in range(len(select.expressions))]))


_RUN_IMAGES_COLUMNS = ("run_key", "image_key", "status", "attempts", "scored_at")


def _run_images_insert(tree: exp.Insert) -> str:
    """An insert into ``run_images`` that also copies each image's ``labels``, ``split``
    and ``current`` (what the count table reads without a join; see
    :mod:`calibrate.store.pg_schema`) and skips an image another writer finished
    meanwhile: it stays finished once."""
    cols = ([c.name for c in tree.this.expressions] if isinstance(tree.this, exp.Schema)
            else list(_RUN_IMAGES_COLUMNS))
    names = ", ".join(cols)
    source = tree.expression.sql(dialect="postgres")
    return (f"INSERT INTO run_images ({names}, labels, split, current) "
            f"SELECT s.*, i.labels, i.split, i.current FROM ({source}) AS s({names}) "
            "JOIN images AS i ON i.image_key = s.image_key "
            "ON CONFLICT (run_key, image_key) DO NOTHING")


@functools.lru_cache(maxsize=4096)
def to_postgres(sql: str) -> tuple[str, ...]:
    """The PostgreSQL statements that do what one DuckDB statement does.

    Parameters
    ----------
    sql : str
        One DuckDB statement of the store, with ``?`` or ``$name`` parameters.

    Returns
    -------
    tuple of str
        Usually one statement; ``CREATE OR REPLACE TEMP TABLE`` becomes a ``DROP``
        (run without parameters) followed by the ``CREATE``. Cached by ``sql``.

    Raises
    ------
    StoreError
        If sqlglot cannot read the statement.
    """
    replace = _OR_REPLACE.match(sql)
    if replace:
        sql = sql[:replace.start()] + f"INSERT INTO {replace.group(1)}" + sql[replace.end():]
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.ParseError as exc:
        raise StoreError(f"cannot translate a store query to PostgreSQL: {exc}") from None
    tree = tree.transform(_rewrite)
    before: tuple[str, ...] = ()
    if isinstance(tree, exp.Create) and tree.args.get("replace"):
        tree.set("replace", False)
        before = (f"DROP TABLE IF EXISTS {tree.this.sql(dialect='postgres')}",)
    text = tree.sql(dialect="postgres")
    target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
    if isinstance(tree, exp.Insert) and target.name.lower() == "run_images":
        text = _run_images_insert(tree)
    if replace:
        keys, others = _REPLACE_KEYS[replace.group(1).lower()]
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in others)
        text += f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
    return (*before, text)
