"""The JSON shapes of the API (pydantic models): what OpenAPI describes and clients get."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

Finite = Annotated[float, Field(allow_inf_nan=False)]


class ErrorBody(BaseModel):
    code: str = Field(description="short and stable: bad_parameter, unknown_id, too_large, not_an_image, ...")
    message: str = Field(description="one line for people")


class ErrorResponse(BaseModel):
    error: ErrorBody


class NeighbourOut(BaseModel):
    rank: int = Field(description="1 for the nearest")
    distance: float
    id: int
    key: str = Field(description="the image's name in the source it came from")
    label: str | None
    thumbnail: str = Field(description="URL of its thumbnail, on this server")


class SearchResponse(BaseModel):
    query: str
    k: int
    took_ms: float = Field(description="time to answer, in milliseconds, on the server")
    neighbours: list[NeighbourOut]


class VectorQuery(BaseModel):
    vector: list[Finite] = Field(description="one feature vector of the index's dimension (GET /v1/index: dim)")
    k: int = Field(10, ge=1, description="neighbours to return, 1 to max_k")


class ImageOut(BaseModel):
    id: int
    key: str
    label: str | None
    added: float = Field(description="when it was added, Unix time")
    thumbnail: str


class IndexOut(BaseModel):
    name: str
    count: int
    model: str
    weights: str
    pooling: str
    views: str = Field(description="the views of each image whose descriptors are summed (full: one)")
    mid: str = Field(description="mid-level features appended to the final vector, BLOCK:POOLING:WEIGHT joined "
                                 "by + (none: the final features alone)")
    dim: int
    metric: str
    backend: str
    input_size: int
    format_version: int | None
    ready: bool
    max_k: int
    writes: bool = Field(description="whether this server accepts writes (a key with write scope is configured)")
    reads_need_key: bool


class AddedImage(BaseModel):
    id: int
    key: str
    name: str = Field(description="the file name the client sent (used for nothing else)")


class AddResponse(BaseModel):
    added: list[AddedImage]
    duplicates: int = Field(description="uploads skipped: the same pixels were indexed from the same file")
    count: int
    took_ms: float


class DeleteResponse(BaseModel):
    deleted: int
    count: int


class Status(BaseModel):
    status: str
    count: int | None = None
