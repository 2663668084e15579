"""Items: the item named in the path, as the caller may see or change it; query parameters."""

from typing import Annotated

from fastapi import Depends, Header, Path, Query

from storeroom.auth.dependencies import CurrentUser
from storeroom.core.db import DbSession
from storeroom.core.etags import VersionMatch, parse_etags
from storeroom.core.schemas import NulFreeStr
from storeroom.items import service as items_service
from storeroom.items.exceptions import ForeignOwner, ItemNotFound
from storeroom.items.models import Item
from storeroom.items.schemas import MAX_TAGS, Tag
from storeroom.items.service import ItemFilters

ItemId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The item's id.")]
OwnerIdParam = Annotated[
    int | None,
    Query(ge=1, le=2**31 - 1, description="Superusers only: read this user's items."),
]


async def read_owner_id(caller: CurrentUser, owner_id: OwnerIdParam = None) -> int:
    """Whose items a read covers: the caller's, or for a superuser whoever `owner_id` names."""
    if owner_id is None or owner_id == caller.id:
        return caller.id
    if not caller.is_superuser:
        raise ForeignOwner()
    return owner_id


ReadOwnerId = Annotated[int, Depends(read_owner_id)]


async def visible_item(
    item_id: ItemId, caller: CurrentUser, session: DbSession, owner_id: OwnerIdParam = None
) -> Item:
    """The item for a read: the caller's own; a superuser may name another owner. Someone
    else's item is reported exactly like a missing one."""
    if owner_id is not None and owner_id != caller.id and not caller.is_superuser:
        raise ItemNotFound()
    return await items_service.get(session, item_id, owner_id or caller.id)


VisibleItem = Annotated[Item, Depends(visible_item)]


async def owned_item(item_id: ItemId, caller: CurrentUser, session: DbSession) -> Item:
    """The item for a change: only ever the caller's own (404 otherwise, superusers included)."""
    return await items_service.get(session, item_id, caller.id)


OwnedItem = Annotated[Item, Depends(owned_item)]


async def item_filters(
    owner_id: ReadOwnerId,
    q: Annotated[
        NulFreeStr | None,
        Query(
            min_length=2,
            max_length=200,
            description="Name or description contains this (case-insensitive).",
        ),
    ] = None,
    tag: Annotated[
        list[Tag] | None,
        Query(max_length=MAX_TAGS, description="Items having every one of these tags."),
    ] = None,
) -> ItemFilters:
    return ItemFilters(owner_id=owner_id, q=q, tags=tuple(tag or ()))


Filters = Annotated[ItemFilters, Depends(item_filters)]


async def if_match(
    header: Annotated[
        str | None,
        Header(
            alias="If-Match",
            description="Only change the item if its ETag is one of these "
            '(e.g. W/"3"); 412 otherwise.',
        ),
    ] = None,
) -> VersionMatch | None:
    return parse_etags(header) if header is not None else None


async def if_none_match(
    header: Annotated[
        str | None,
        Header(alias="If-None-Match", description="304 if the item's ETag is one of these."),
    ] = None,
) -> VersionMatch | None:
    return parse_etags(header) if header is not None else None


IfMatch = Annotated[VersionMatch | None, Depends(if_match)]
IfNoneMatch = Annotated[VersionMatch | None, Depends(if_none_match)]
