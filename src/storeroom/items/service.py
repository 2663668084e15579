"""Items: catalog logic. Takes the session explicitly; raises domain errors."""

import asyncio
import contextlib
import csv
import io
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Integer,
    Numeric,
    Select,
    String,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from storeroom.core.db import UTCDateTime, utcnow
from storeroom.core.etags import VersionMatch
from storeroom.core.pagination import PageParams
from storeroom.events import service as events_service
from storeroom.events.service import EventType
from storeroom.items.exceptions import ItemChanged, ItemNotFound
from storeroom.items.models import Item, ItemCount, ItemTag, join_tags, split_tags
from storeroom.items.schemas import (
    CSV_COLUMNS,
    ExportFormat,
    ItemCreate,
    ItemRead,
    ItemSort,
    ItemUpdate,
    csv_text_cell,
)

logger = logging.getLogger("storeroom.items")

AnySelect = Select[*tuple[Any, ...]]

EXPORT_BATCH_SIZE = 1000


@dataclass(frozen=True, slots=True)
class ItemFilters:
    """Which of an owner's items a list or an export covers."""

    owner_id: int
    q: str | None = None
    tags: Sequence[str] = field(default_factory=tuple)

    @property
    def shape(self) -> tuple[bool, int]:
        """What the SQL depends on; the values travel as bound parameters."""
        return bool(self.q), len(self.distinct_tags)

    @property
    def distinct_tags(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.tags))

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"owner_id": self.owner_id}
        if self.q:
            params["pattern"] = "%" + _escape_like(self.q) + "%"
        for number, tag in enumerate(self.distinct_tags):
            params[f"tag_{number}"] = tag
        return params


def _escape_like(text: str) -> str:
    return text.replace("/", "//").replace("%", "/%").replace("_", "/_")


_OWNER = bindparam("owner_id", type_=Integer)


def _conditions(has_q: bool, tag_count: int) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [Item.owner_id == _OWNER]
    if has_q:
        pattern = func.lower(bindparam("pattern", type_=String))
        conditions.append(
            or_(
                func.lower(Item.name).like(pattern, escape="/"),
                func.lower(Item.description).like(pattern, escape="/"),
            )
        )
    for number in range(tag_count):
        conditions.append(
            Item.id.in_(
                select(ItemTag.item_id).where(
                    ItemTag.owner_id == _OWNER,
                    ItemTag.tag == bindparam(f"tag_{number}", type_=String),
                )
            )
        )
    return conditions


async def create(session: AsyncSession, owner_id: int, data: ItemCreate) -> Item:
    now = utcnow()
    item = Item(
        owner_id=owner_id,
        name=data.name,
        description=data.description,
        price=data.price,
        tax=data.tax,
        tags_text=join_tags(data.tags),
        version=1,
        created_at=now,
        updated_at=now,
    )
    session.add(item)
    await session.flush()
    await _write_tags(session, item.id, owner_id, data.tags)
    await add_to_count(session, owner_id, 1)
    await events_service.record(
        session, owner_id, EventType.item_created, ItemRead.model_validate(item)
    )
    return item


async def add_to_count(session: AsyncSession, owner_id: int, delta: int) -> None:
    """Keep the owner's item count in step; call it in the transaction that adds or removes
    items (bulk loaders that insert items directly must call it too)."""
    values = {"owner_id": owner_id, "total": max(delta, 0)}
    dialect = session.get_bind().dialect.name
    statement: Any
    if dialect == "postgresql":
        statement = postgresql.insert(ItemCount).values(values)
        statement = statement.on_conflict_do_update(
            index_elements=[ItemCount.owner_id], set_={"total": ItemCount.total + delta}
        )
    elif dialect == "sqlite":
        statement = sqlite.insert(ItemCount).values(values)
        statement = statement.on_conflict_do_update(
            index_elements=[ItemCount.owner_id], set_={"total": ItemCount.total + delta}
        )
    else:
        statement = mysql.insert(ItemCount).values(values)
        statement = statement.on_duplicate_key_update(total=ItemCount.total + delta)
    await session.execute(statement)


async def get(session: AsyncSession, item_id: int, owner_id: int) -> Item:
    item = await session.scalar(select(Item).where(Item.id == item_id, Item.owner_id == owner_id))
    if item is None:
        raise ItemNotFound()
    return item


_SORT_COLUMNS: dict[ItemSort, tuple[Any, bool]] = {
    ItemSort.created_at: (Item.created_at, False),
    ItemSort.created_at_desc: (Item.created_at, True),
    ItemSort.name: (Item.name, False),
    ItemSort.name_desc: (Item.name, True),
    ItemSort.price: (Item.price, False),
    ItemSort.price_desc: (Item.price, True),
}


def _order_by(sort: ItemSort) -> list[Any]:
    """The sort column, then the id in the same direction: equal keys keep a stable order."""
    column, descending = _SORT_COLUMNS[sort]
    if descending:
        return [column.desc(), Item.id.desc()]
    return [column.asc(), Item.id.asc()]


# The columns an item is read with, and the JSON record made from them: the list and the
# NDJSON export share both, so an export line is exactly a list entry (ItemRead's shape).
_READ_COLUMNS = (
    Item.id,
    Item.owner_id,
    Item.name,
    Item.description,
    Item.price,
    Item.tax,
    Item.tags_text,
    Item.version,
    Item.created_at,
    Item.updated_at,
)
_JSON_OPTIONS = orjson.OPT_UTC_Z


def item_record(row: Any) -> dict[str, Any]:
    return {
        "id": row[0],
        "owner_id": row[1],
        "name": row[2],
        "description": row[3],
        "price": str(row[4]),
        "tax": str(row[5]),
        "tags": split_tags(row[6]),
        "version": row[7],
        "created_at": row[8],
        "updated_at": row[9],
    }


@cache
def _page_statement(has_q: bool, tag_count: int, sort: ItemSort) -> AnySelect:
    """Built once per shape: building and cache-keying a statement like this costs more than
    running it, so each request only binds its values."""
    total = _total_statement(has_q, tag_count).scalar_subquery()
    return (
        select(*_READ_COLUMNS, total.label("total"))
        .where(*_conditions(has_q, tag_count))
        .order_by(*_order_by(sort))
        .offset(bindparam("offset", type_=Integer))
        .limit(bindparam("limit", type_=Integer))
    )


@cache
def _total_statement(has_q: bool, tag_count: int) -> AnySelect:
    """Without a search or tag filter the total is the owner's kept count (one row); with one,
    the matching items are counted."""
    if not has_q and not tag_count:
        return select(func.coalesce(func.max(ItemCount.total), 0)).where(
            ItemCount.owner_id == _OWNER
        )
    return select(func.count()).select_from(Item).where(*_conditions(has_q, tag_count))


async def list_items(
    reader: AsyncEngine, filters: ItemFilters, page: PageParams, sort: ItemSort
) -> tuple[list[dict[str, Any]], int]:
    """One page (as JSON-ready records) and the total, in one round trip: the total rides
    along as an uncorrelated scalar subquery, computed once, and the single statement runs in
    autocommit (no BEGIN/COMMIT around it). Only a page past the end needs a second query."""
    params = filters.params()
    # Core, not the ORM: no entities to build for a read-only page.
    async with reader.connect() as connection:
        rows = (
            await connection.execute(
                _page_statement(*filters.shape, sort),
                {**params, "offset": page.offset, "limit": page.limit},
            )
        ).all()
        if rows:
            return [item_record(row) for row in rows], int(rows[0][10])
        if page.offset == 0:
            return [], 0
        count = await connection.scalar(_total_statement(*filters.shape), params)
    return [], int(count or 0)


def page_json(records: list[dict[str, Any]], total: int, page: PageParams) -> bytes:
    """A Page[ItemRead] body, serialized once by orjson."""
    return orjson.dumps(
        {"items": records, "total": total, "offset": page.offset, "limit": page.limit},
        option=_JSON_OPTIONS,
    )


async def update_item(
    session: AsyncSession,
    item: Item,
    changes: ItemUpdate,
    *,
    expected: VersionMatch | None = None,
) -> Item:
    """Apply the fields sent. The version check and the bump are one UPDATE ... WHERE version
    IN (...), so two clients holding the same ETag cannot both win."""
    fields = changes.changes()
    if expected is not None and not expected.matches(item.version):
        raise ItemChanged()
    if not fields:
        return item
    fields.pop("tags", None)
    tags = changes.tags if "tags" in changes.model_fields_set else None
    values: dict[str, Any] = dict(fields)
    if tags is not None:
        values["tags_text"] = join_tags(tags)
    statement = (
        update(Item)
        .where(Item.id == item.id)
        .values(**values, version=Item.version + 1, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if expected is not None and not expected.any:
        statement = statement.where(Item.version.in_(expected.versions))
    result = await session.execute(statement)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise ItemChanged()
    if tags is not None:
        await session.execute(delete(ItemTag).where(ItemTag.item_id == item.id))
        await _write_tags(session, item.id, item.owner_id, tags)
    await session.refresh(item)
    await events_service.record(
        session, item.owner_id, EventType.item_updated, ItemRead.model_validate(item)
    )
    return item


async def touch(session: AsyncSession, item_id: int, owner_id: int) -> bool:
    """Mark the owner's item changed (a new version) because something its response shows
    changed, such as its attached files; locks the row until commit. False if there is none."""
    result = await session.execute(
        update(Item)
        .where(Item.id == item_id, Item.owner_id == owner_id)
        .values(version=Item.version + 1, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def delete_item(
    session: AsyncSession, item: Item, *, expected: VersionMatch | None = None
) -> None:
    statement = delete(Item).where(Item.id == item.id)
    if expected is not None and not expected.any:
        statement = statement.where(Item.version.in_(expected.versions))
    result = await session.execute(statement.execution_options(synchronize_session=False))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise ItemChanged()
    await add_to_count(session, item.owner_id, -1)
    await events_service.record(session, item.owner_id, EventType.item_deleted, {"id": item.id})
    session.expunge(item)


async def delete_all_of_owner(session: AsyncSession, owner_id: int) -> None:
    """Every item of the owner, its tags and its count (deleting the account), explicitly
    rather than through the foreign keys' ON DELETE CASCADE: SQLite only honours those on a
    connection with PRAGMA foreign_keys on."""
    for statement in (
        delete(ItemTag).where(ItemTag.owner_id == owner_id),
        delete(Item).where(Item.owner_id == owner_id),
        delete(ItemCount).where(ItemCount.owner_id == owner_id),
    ):
        await session.execute(statement.execution_options(synchronize_session=False))


async def _write_tags(session: AsyncSession, item_id: int, owner_id: int, tags: list[str]) -> None:
    if tags:
        await session.execute(
            insert(ItemTag),
            [{"item_id": item_id, "tag": tag, "owner_id": owner_id} for tag in tags],
        )


# --- bulk insert (the import job) ------------------------------------------------------------

_ITEMS = Item.metadata.tables["items"]
_ITEM_TAGS = ItemTag.metadata.tables["item_tags"]


async def insert_many(session: AsyncSession, owner_id: int, items: Sequence[ItemCreate]) -> int:
    """Add validated items to the owner's catalog in a few statements, in the session's
    transaction: the items, their tag rows and the owner's count. Returns how many.

    PostgreSQL takes them in one statement with the rows as arrays, which also writes the tag
    rows from the new items' ids and adds them to the count (as add_to_count does), all on the
    server; the other databases get a multi-row INSERT ... RETURNING (per few hundred rows),
    one for the tags and add_to_count."""
    if not items:
        return 0
    now = utcnow()
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            _INSERT_ITEMS_TAGS_AND_COUNT,
            {
                "owner_id": owner_id,
                "now": now,
                "names": [item.name for item in items],
                "descriptions": [item.description for item in items],
                "prices": [item.price for item in items],
                "taxes": [item.tax for item in items],
                "tags": [join_tags(item.tags) for item in items],
            },
        )
    else:
        await _insert_items_returning(session, owner_id, items, now)
        await add_to_count(session, owner_id, len(items))
    return len(items)


# One round trip for a chunk of items, their tags and the count; unnest keeps the statement
# (and its plan) the same whatever the number of rows.
_INSERT_ITEMS_TAGS_AND_COUNT = text(
    """
    WITH new_items AS (
        INSERT INTO items (owner_id, name, description, price, tax, tags, version,
                           created_at, updated_at)
        SELECT :owner_id, t.name, t.description, t.price, t.tax, t.tags, 1, :now, :now
        FROM unnest(CAST(:names AS text[]), CAST(:descriptions AS text[]),
                    CAST(:prices AS numeric[]), CAST(:taxes AS numeric[]),
                    CAST(:tags AS text[])) AS t(name, description, price, tax, tags)
        RETURNING id, tags
    ), new_tags AS (
        INSERT INTO item_tags (item_id, tag, owner_id)
        SELECT new_items.id, tag, :owner_id
        FROM new_items, unnest(string_to_array(new_items.tags, ';')) AS tag
    )
    INSERT INTO item_counts (owner_id, total)
    SELECT :owner_id, count(*) FROM new_items
    ON CONFLICT (owner_id) DO UPDATE SET total = item_counts.total + excluded.total
    """
).bindparams(
    bindparam("owner_id", type_=Integer),
    bindparam("now", type_=UTCDateTime()),
    bindparam("names", type_=postgresql.ARRAY(String)),
    bindparam("descriptions", type_=postgresql.ARRAY(String)),
    bindparam("prices", type_=postgresql.ARRAY(Numeric(12, 2))),
    bindparam("taxes", type_=postgresql.ARRAY(Numeric(5, 2))),
    bindparam("tags", type_=postgresql.ARRAY(String)),
)


async def _insert_items_returning(
    session: AsyncSession, owner_id: int, items: Sequence[ItemCreate], now: datetime
) -> None:
    result = await session.execute(
        insert(_ITEMS).returning(_ITEMS.c.id, sort_by_parameter_order=True),
        [
            {
                "owner_id": owner_id,
                "name": item.name,
                "description": item.description,
                "price": item.price,
                "tax": item.tax,
                "tags": join_tags(item.tags),
                "version": 1,
                "created_at": now,
                "updated_at": now,
            }
            for item in items
        ],
    )
    tag_rows = [
        {"item_id": item_id, "tag": tag, "owner_id": owner_id}
        for item_id, item in zip(result.scalars(), items, strict=True)
        for tag in item.tags
    ]
    if tag_rows:
        await session.execute(insert(_ITEM_TAGS), tag_rows)


# --- export -------------------------------------------------------------------------------


async def fetch_export_batch(
    connection: AsyncConnection, filters: ItemFilters, after_id: int
) -> Sequence[Any]:
    """One keyset page of the export: the items after `after_id`, in id order. Each batch is
    its own short statement, so no cursor or snapshot is held open between them."""
    result = await connection.execute(
        _export_statement(*filters.shape), {**filters.params(), "after_id": after_id}
    )
    return result.all()


@cache
def _export_statement(has_q: bool, tag_count: int) -> AnySelect:
    return (
        select(*_READ_COLUMNS)
        .where(*_conditions(has_q, tag_count), Item.id > bindparam("after_id", type_=Integer))
        .order_by(Item.id)
        .limit(EXPORT_BATCH_SIZE)
    )


def _ndjson_lines(rows: Sequence[Any]) -> bytes:
    dumps = orjson.dumps
    option = _JSON_OPTIONS | orjson.OPT_APPEND_NEWLINE
    return b"".join(dumps(item_record(row), option=option) for row in rows)


class _CsvBuffer:
    """A csv.writer target that hands back what was written since the last call."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self.writer = csv.writer(self._buffer, lineterminator="\r\n")

    def take(self) -> bytes:
        data = self._buffer.getvalue().encode("utf-8")
        self._buffer.seek(0)
        self._buffer.truncate()
        return data


def _csv_rows(rows: Sequence[Any]) -> list[tuple[Any, ...]]:
    # Runs once per exported row. orjson formats the timestamps of a whole batch in one call
    # (several times faster than datetime.isoformat), in the same form as the JSON responses.
    # The text cells are made safe for spreadsheets; ids, money and timestamps are ours, always
    # numbers or dates, and stay as they are (a negative price must still read as a number).
    stamps = orjson.loads(orjson.dumps([(row[8], row[9]) for row in rows], option=_JSON_OPTIONS))
    text = csv_text_cell
    return [
        (
            row[0],
            text(row[2]),
            text(row[3]) if row[3] else "",
            str(row[4]),
            str(row[5]),
            text(row[6]),
            created,
            updated,
        )
        for row, (created, updated) in zip(rows, stamps, strict=True)
    ]


async def _next_batch(
    connection: AsyncConnection, filters: ItemFilters, after_id: int
) -> Sequence[Any]:
    rows = await fetch_export_batch(connection, filters, after_id)
    # End the batch's transaction: no lock or snapshot is held while the client reads.
    await connection.rollback()
    return rows


async def export_batches(
    engine: AsyncEngine, filters: ItemFilters, export_format: ExportFormat
) -> AsyncGenerator[tuple[bytes, int]]:
    """The export as (bytes, items in them), one batch of up to EXPORT_BATCH_SIZE items at a
    time; the first carries the CSV header. Batches are pipelined: the query for the next
    batch is on its way to the database while this one is formatted and sent."""
    csv_buffer = _CsvBuffer() if export_format is ExportFormat.csv else None
    if csv_buffer is not None:
        csv_buffer.writer.writerow(CSV_COLUMNS)
    async with engine.connect() as connection:
        pending = asyncio.ensure_future(_next_batch(connection, filters, 0))
        try:
            first = True
            while True:
                rows = await pending
                more = len(rows) == EXPORT_BATCH_SIZE
                if more:
                    pending = asyncio.ensure_future(_next_batch(connection, filters, rows[-1][0]))
                    await asyncio.sleep(0)  # let it send the query before we format
                if csv_buffer is not None:
                    csv_buffer.writer.writerows(_csv_rows(rows))
                    chunk = csv_buffer.take()
                else:
                    chunk = _ndjson_lines(rows)
                if chunk or first:
                    yield chunk, len(rows)
                first = False
                if not more:
                    return
        finally:
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
            elif not pending.cancelled():
                pending.exception()  # retrieved, so asyncio does not warn about it


async def _export_chunks(
    engine: AsyncEngine, filters: ItemFilters, export_format: ExportFormat
) -> AsyncGenerator[bytes]:
    batches = export_batches(engine, filters, export_format)
    try:
        async for chunk, _count in batches:
            yield chunk
    finally:
        await batches.aclose()


async def count_matching(session: AsyncSession, filters: ItemFilters) -> int:
    """How many items a list or an export with these filters covers."""
    count = await session.scalar(_total_statement(*filters.shape), filters.params())
    return int(count or 0)


class _ExportStream:
    """The export's chunks: the first, already read, then the rest. `aclose` ends the batches
    and releases their connection whether or not anything was read (a HEAD reads nothing)."""

    def __init__(self, first: bytes, rest: AsyncGenerator[bytes]) -> None:
        self._first: bytes | None = first
        self._rest = rest

    def __aiter__(self) -> "_ExportStream":
        return self

    async def __anext__(self) -> bytes:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        try:
            return await anext(self._rest)
        except StopAsyncIteration:
            raise
        except Exception:
            logger.exception("items export failed mid-stream; aborting the response")
            raise

    async def aclose(self) -> None:
        self._first = None
        await self._rest.aclose()


async def open_export(
    engine: AsyncEngine, filters: ItemFilters, export_format: ExportFormat
) -> AsyncIterator[bytes]:
    """The export as a stream of byte chunks, on its own connection (the request's session is
    gone by the time the body streams). The first batch is read before this returns, so a
    failing query is still an ordinary error response; a failure after that propagates out of
    the stream, which aborts the connection instead of ending the body cleanly. The caller
    must `aclose` the stream (ClosingStreamingResponse does)."""
    chunks = _export_chunks(engine, filters, export_format)
    try:
        first = await anext(chunks)
    except BaseException:
        await chunks.aclose()
        raise
    return _ExportStream(first, chunks)
