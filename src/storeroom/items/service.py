"""Items: catalog logic. Takes the session explicitly; raises domain errors."""

import csv
import io
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Select, delete, func, insert, or_, select, update
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from storeroom.core.db import utcnow
from storeroom.core.etags import VersionMatch
from storeroom.core.pagination import PageParams
from storeroom.items.exceptions import ItemChanged, ItemNotFound
from storeroom.items.models import Item, ItemCount, ItemTag, join_tags, split_tags
from storeroom.items.schemas import CSV_COLUMNS, ExportFormat, ItemCreate, ItemSort, ItemUpdate

logger = logging.getLogger("storeroom.items")

EXPORT_BATCH_SIZE = 1000


@dataclass(frozen=True, slots=True)
class ItemFilters:
    """Which of an owner's items a list or an export covers."""

    owner_id: int
    q: str | None = None
    tags: Sequence[str] = field(default_factory=tuple)

    def conditions(self) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = [Item.owner_id == self.owner_id]
        if self.q:
            conditions.append(
                or_(
                    Item.name.icontains(self.q, autoescape=True),
                    Item.description.icontains(self.q, autoescape=True),
                )
            )
        for tag in dict.fromkeys(self.tags):
            conditions.append(
                Item.id.in_(
                    select(ItemTag.item_id).where(
                        ItemTag.owner_id == self.owner_id, ItemTag.tag == tag
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


async def list_items(
    session: AsyncSession, filters: ItemFilters, page: PageParams, sort: ItemSort
) -> tuple[Sequence[Item], int]:
    """One page and the total, in one round trip: the total rides along as an uncorrelated
    scalar subquery (computed once, from the owner index). Only a page past the end needs a
    second query for it."""
    conditions = filters.conditions()
    total = _total_query(filters).scalar_subquery()
    query = (
        select(Item, total.label("total"))
        .where(*conditions)
        .order_by(*_order_by(sort))
        .offset(page.offset)
        .limit(page.limit)
    )
    rows = (await session.execute(query)).all()
    if rows:
        return [row[0] for row in rows], int(rows[0][1])
    if page.offset == 0:
        return [], 0
    count = await session.scalar(_total_query(filters))
    return [], int(count or 0)


def _total_query(filters: ItemFilters) -> Select[int]:
    """Without a search or tag filter the total is the owner's kept count (one row); with one,
    the matching items are counted."""
    if not filters.q and not filters.tags:
        return select(func.coalesce(func.max(ItemCount.total), 0)).where(
            ItemCount.owner_id == filters.owner_id
        )
    return select(func.count()).select_from(Item).where(*filters.conditions())


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
    session.expunge(item)


async def _write_tags(session: AsyncSession, item_id: int, owner_id: int, tags: list[str]) -> None:
    if tags:
        await session.execute(
            insert(ItemTag),
            [{"item_id": item_id, "tag": tag, "owner_id": owner_id} for tag in tags],
        )


# --- export -------------------------------------------------------------------------------

_EXPORT_COLUMNS = (
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


async def fetch_export_batch(
    connection: AsyncConnection, filters: ItemFilters, after_id: int
) -> Sequence[Any]:
    """One keyset page of the export: the items after `after_id`, in id order. Each batch is
    its own short statement, so no cursor or snapshot is held open between them."""
    result = await connection.execute(
        select(*_EXPORT_COLUMNS)
        .where(*filters.conditions(), Item.id > after_id)
        .order_by(Item.id)
        .limit(EXPORT_BATCH_SIZE)
    )
    return result.all()


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _ndjson_lines(rows: Sequence[Any]) -> bytes:
    dumps = orjson.dumps
    option = orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE
    return b"".join(
        dumps(
            {
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
            },
            option=option,
        )
        for row in rows
    )


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
    return [
        (
            row[0],
            row[2],
            row[3] if row[3] is not None else "",
            _money(row[4]),
            _money(row[5]),
            row[6],
            _iso(row[8]),
            _iso(row[9]),
        )
        for row in rows
    ]


def _money(value: Decimal) -> str:
    return str(value)


async def _export_chunks(
    engine: AsyncEngine, filters: ItemFilters, export_format: ExportFormat
) -> AsyncGenerator[bytes]:
    csv_buffer = _CsvBuffer() if export_format is ExportFormat.csv else None
    if csv_buffer is not None:
        csv_buffer.writer.writerow(CSV_COLUMNS)
    async with engine.connect() as connection:
        after_id = 0
        first = True
        while True:
            rows = await fetch_export_batch(connection, filters, after_id)
            await connection.rollback()  # end the batch's transaction: no long-lived snapshot
            if csv_buffer is not None:
                csv_buffer.writer.writerows(_csv_rows(rows))
                chunk = csv_buffer.take()
            else:
                chunk = _ndjson_lines(rows)
            if chunk or first:
                yield chunk
            first = False
            if len(rows) < EXPORT_BATCH_SIZE:
                return
            after_id = rows[-1][0]


async def open_export(
    engine: AsyncEngine, filters: ItemFilters, export_format: ExportFormat
) -> AsyncIterator[bytes]:
    """The export as a stream of byte chunks, on its own connection (the request's session is
    gone by the time the body streams). The first batch is read before this returns, so a
    failing query is still an ordinary error response; a failure after that propagates out of
    the stream, which aborts the connection instead of ending the body cleanly."""
    chunks = _export_chunks(engine, filters, export_format)
    try:
        first = await anext(chunks)
    except BaseException:
        await chunks.aclose()
        raise

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield first
            async for chunk in chunks:
                yield chunk
        except Exception:
            logger.exception("items export failed mid-stream; aborting the response")
            raise
        finally:
            await chunks.aclose()

    return stream()
