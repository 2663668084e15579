"""Items: the errors this domain raises."""

from storeroom.core.errors import NotFound, PermissionDenied, PreconditionFailed


class ItemNotFound(NotFound):
    detail = "Item not found"
    code = "item_not_found"


class ItemChanged(PreconditionFailed):
    detail = "The item has changed since you read it; fetch it again and retry"
    code = "item_changed"


class ForeignOwner(PermissionDenied):
    detail = "Only a superuser may list another user's items"
    code = "superuser_required"
