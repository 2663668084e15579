"""Pagination: the one offset/limit dependency every list endpoint uses, and the page shape."""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel


@dataclass(frozen=True, slots=True)
class PageParams:
    offset: int
    limit: int


async def page_params(
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="Rows to skip.")] = 0,
    limit: Annotated[int, Query(ge=1, le=100, description="Rows per page (1-100).")] = 20,
) -> PageParams:
    return PageParams(offset=offset, limit=limit)


Pagination = Annotated[PageParams, Depends(page_params)]


T = TypeVar("T")
ModelT = TypeVar("ModelT", bound=BaseModel)


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    offset: int
    limit: int


def paginate(
    schema: type[ModelT], rows: Iterable[Any], total: int, params: PageParams
) -> Page[ModelT]:
    """The page of `rows` (ORM objects or mappings) as `schema`, as every list endpoint
    returns it."""
    return Page[schema](  # type: ignore[valid-type]
        items=[schema.model_validate(row) for row in rows],
        total=total,
        offset=params.offset,
        limit=params.limit,
    )
